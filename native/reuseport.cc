// A reuseport group's steering program (classic BPF, SO_ATTACH_REUSEPORT_CBPF) and joining the group (listen).
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core.h"

#ifdef __linux__
#include <linux/filter.h>
#ifndef SO_ATTACH_REUSEPORT_CBPF
#define SO_ATTACH_REUSEPORT_CBPF 51
#endif
#ifndef SO_DETACH_REUSEPORT_BPF
#define SO_DETACH_REUSEPORT_BPF 68
#endif
#endif

namespace prefork {

Failure start_listening(int fd, int backlog) {
  if (listen(fd, backlog) < 0) return {-errno, "listen"};
  return {};
}

#ifdef __linux__
Failure attach_reuseport_program(int fd, const std::vector<Instruction>& program) {
  // For tests: while the file PREFORK_TEST_ATTACH_ENOMEM names exists, attaching fails as it does when the
  // program is larger than net.core.optmem_max or the kernel is short of memory.
  const char* failing = getenv("PREFORK_TEST_ATTACH_ENOMEM");
  if (failing != nullptr && access(failing, F_OK) == 0) return {-ENOMEM, "setsockopt"};
  std::vector<sock_filter> filter(program.size());
  for (size_t i = 0; i < program.size(); i++) {
    filter[i] = {program[i].code, program[i].jt, program[i].jf, program[i].k};
  }
  sock_fprog fprog = {static_cast<unsigned short>(filter.size()), filter.data()};
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &fprog, sizeof(fprog)) < 0) return {-errno, "setsockopt"};
  return {};
}

Failure detach_reuseport_program(int fd) {
  int unused = 0;
  if (setsockopt(fd, SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, &unused, sizeof(unused)) < 0) return {-errno, "setsockopt"};
  return {};
}
#else
Failure attach_reuseport_program(int, const std::vector<Instruction>&) { return {-ENOPROTOOPT, "setsockopt"}; }
Failure detach_reuseport_program(int) { return {-ENOPROTOOPT, "setsockopt"}; }
#endif

}  // namespace prefork
