// Shared memory for the counter store: a memfd the primary creates and every worker maps MAP_SHARED.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <sys/stat.h>

#include "core.h"

#ifndef MFD_ALLOW_SEALING
#define MFD_ALLOW_SEALING 2U
#endif
#ifndef F_ADD_SEALS
#define F_ADD_SEALS 1033
#define F_SEAL_SEAL 0x0001
#define F_SEAL_SHRINK 0x0002
#define F_SEAL_GROW 0x0004
#endif

namespace prefork {

int create_shared_region(size_t bytes) {
  int fd;
#if defined(__linux__) && defined(SYS_memfd_create)
  fd = static_cast<int>(syscall(SYS_memfd_create, "prefork-store", 1U /* MFD_CLOEXEC */ | MFD_ALLOW_SEALING));
  if (fd < 0) return -errno;
  bool sealable = true;
#else
  // Elsewhere: a POSIX shm object, unlinked at once so only its fd names it.
  char name[64];
  snprintf(name, sizeof(name), "/prefork-store-%d", static_cast<int>(getpid()));
  fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0) return -errno;
  shm_unlink(name);
  set_cloexec(fd);
  bool sealable = false;
#endif
  if (ftruncate(fd, static_cast<off_t>(bytes)) < 0 ||
      (sealable && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)) {
    int error = errno;
    close(fd);
    return -error;
  }
  return fd;
}

// The region's size, or -errno. On glibc through statx (GLIBC_2.28): fstat's symbol is GLIBC_2.33, and the
// prebuild must load wherever Node itself runs (glibc 2.28 for Node 22 and later). musl has no symbol versions.
static long long region_size(int fd) {
#if defined(__GLIBC__)
  struct statx info;
  if (statx(fd, "", AT_EMPTY_PATH, STATX_SIZE, &info) < 0) return -errno;
  return static_cast<long long>(info.stx_size);
#else
  struct stat info;
  if (fstat(fd, &info) < 0) return -errno;
  return static_cast<long long>(info.st_size);
#endif
}

void* map_shared_region(int fd, size_t bytes, int* error) {
  long long size = region_size(fd);
  if (size < 0) {
    *error = static_cast<int>(size);
    return nullptr;
  }
  if (static_cast<size_t>(size) != bytes) {
    *error = -EINVAL;
    return nullptr;
  }
  void* address = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (address == MAP_FAILED) {
    *error = -errno;
    return nullptr;
  }
  return address;
}

void unmap_shared_region(void* address, size_t bytes) { munmap(address, bytes); }

}  // namespace prefork
