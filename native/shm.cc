// Shared memory for the counter store: a memfd the primary creates and every worker maps MAP_SHARED.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core.h"

namespace prefork {

int create_shared_region(size_t bytes) {
  int fd;
#if defined(__linux__) && defined(SYS_memfd_create)
  fd = static_cast<int>(syscall(SYS_memfd_create, "prefork-store", 1U /* MFD_CLOEXEC */));
  if (fd < 0) return -errno;
#else
  // Elsewhere: a POSIX shm object, unlinked at once so only its fd names it.
  char name[64];
  snprintf(name, sizeof(name), "/prefork-store-%d", static_cast<int>(getpid()));
  fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0) return -errno;
  shm_unlink(name);
  set_cloexec(fd);
#endif
  if (ftruncate(fd, static_cast<off_t>(bytes)) < 0) {
    int error = errno;
    close(fd);
    return -error;
  }
  return fd;
}

void* map_shared_region(int fd, size_t bytes, int* error) {
  void* address = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (address == MAP_FAILED) {
    *error = -errno;
    return nullptr;
  }
  return address;
}

void unmap_shared_region(void* address, size_t bytes) { munmap(address, bytes); }

}  // namespace prefork
