// Reaping exactly one child: waitid on its pidfd, or a blocking waitpid on its pid (never waitpid(-1)).
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#include "core.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace prefork {

int wait_pidfd(int pidfd, ExitStatus* status) {
#ifdef __linux__
  siginfo_t info;
  memset(&info, 0, sizeof(info));
  int result;
  do result = waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info, WEXITED | WNOHANG);
  while (result < 0 && errno == EINTR);
  if (result < 0) return -errno;
  if (info.si_pid == 0) return 0;
  if (info.si_code == CLD_EXITED) {
    status->code = info.si_status;
    status->signal = 0;
  } else {
    status->code = -1;
    status->signal = info.si_status;
  }
  return 1;
#else
  (void)pidfd;
  (void)status;
  return -ENOSYS;
#endif
}

int wait_exited(pid_t pid) {
  siginfo_t info;
  memset(&info, 0, sizeof(info));
  int result;
  do result = waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT);
  while (result < 0 && errno == EINTR);
  return result < 0 ? -errno : 0;
}

int reap(pid_t pid, ExitStatus* status) {
  int raw;
  pid_t result;
  do result = waitpid(pid, &raw, WNOHANG);
  while (result < 0 && errno == EINTR);
  if (result < 0) return -errno;
  if (result == 0) return 0;
  if (WIFEXITED(raw)) {
    status->code = WEXITSTATUS(raw);
    status->signal = 0;
  } else {
    status->code = -1;
    status->signal = WTERMSIG(raw);
  }
  return 1;
}

}  // namespace prefork
