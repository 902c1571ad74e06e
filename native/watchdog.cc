// The orphan watchdog of a worker: a thread that sleeps until the primary's end of the control channel is
// gone, then SIGKILLs this process after a grace period. It needs no JavaScript, so a worker whose event
// loop is stuck still cannot outlive its primary by more than the grace.
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <thread>

#include "core.h"

#ifndef POLLRDHUP
#define POLLRDHUP 0
#endif

namespace prefork {

void start_orphan_watchdog(int fd, int grace_ms) {
  int own = dup_cloexec(fd);  // JavaScript owns fd and may close it; a closed fd would read as the peer gone
  if (own < 0) return;
  std::thread([fd = own, grace_ms]() {
    pollfd watched{fd, POLLRDHUP, 0};
    for (;;) {
      // POLLHUP and POLLERR are always reported; data arriving (POLLIN) is not asked for and wakes nothing.
      int ready = poll(&watched, 1, -1);
      if (ready < 0 && errno == EINTR) continue;
      if (ready < 0 || (watched.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))) break;
    }
    timespec grace{grace_ms / 1000, (grace_ms % 1000) * 1000000L};
    while (nanosleep(&grace, &grace) < 0 && errno == EINTR) {
    }
    kill(getpid(), SIGKILL);
  }).detach();
}

}  // namespace prefork
