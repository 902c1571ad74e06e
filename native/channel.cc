// The control channel's transport: a Unix stream socketpair carrying bytes and fds (SCM_RIGHTS).
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core.h"

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif
#ifndef MSG_CMSG_CLOEXEC
#define MSG_CMSG_CLOEXEC 0
#endif

namespace prefork {

namespace {
// The most fds one read takes: a frame carries at most 32 (MAX_FDS_PER_MESSAGE), and one read never takes the
// fds of two sendmsg calls.
constexpr size_t kMaxFdsPerRead = 64;
}  // namespace

int set_cloexec(int fd) {
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) return -errno;
  return 0;
}

int dup_cloexec(int fd) {
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  return copy < 0 ? -errno : copy;
}

int peer_pid(int fd) {
#if defined(SO_PEERCRED)
  struct ucred credentials;
  socklen_t length = sizeof(credentials);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) < 0) return -errno;
  return credentials.pid;
#elif defined(LOCAL_PEERPID)
  pid_t pid;
  socklen_t length = sizeof(pid);
  if (getsockopt(fd, SOL_LOCAL, LOCAL_PEERPID, &pid, &length) < 0) return -errno;
  return pid;
#else
  (void)fd;
  return -ENOSYS;
#endif
}

Failure socket_pair(int fds[2]) {
#ifdef SOCK_CLOEXEC
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0) return {-errno, "socketpair"};
#else
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) < 0) return {-errno, "socketpair"};
  set_cloexec(fds[0]);
  set_cloexec(fds[1]);
#endif
  return {};
}

ssize_t channel_send(int fd, const char* data, size_t length, const std::vector<int>& fds) {
  iovec io{const_cast<char*>(data), length};
  msghdr message;
  memset(&message, 0, sizeof(message));
  message.msg_iov = &io;
  message.msg_iovlen = 1;
  std::vector<char> control;
  if (!fds.empty()) {
    control.assign(CMSG_SPACE(sizeof(int) * fds.size()), 0);
    message.msg_control = control.data();
    message.msg_controllen = control.size();
    cmsghdr* header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    memcpy(CMSG_DATA(header), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t sent;
  do sent = sendmsg(fd, &message, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (sent < 0 && errno == EINTR);
  return sent < 0 ? -errno : sent;
}

ssize_t channel_recv(int fd, char* data, size_t length, size_t max_fds, std::vector<int>* fds, bool* truncated) {
  iovec io{data, length};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerRead)];
  if (max_fds > kMaxFdsPerRead) max_fds = kMaxFdsPerRead;
  msghdr message;
  memset(&message, 0, sizeof(message));
  message.msg_iov = &io;
  message.msg_iovlen = 1;
  // Without a control buffer the kernel drops the fds and sets MSG_CTRUNC: a peer that may send none cannot
  // put a single one into our fd table, not even for the moment until we would close it. A buffer for max_fds
  // (rounded up to the alignment: one more on 64-bit Linux when max_fds is odd) bounds what one read installs.
  if (max_fds > 0) {
    message.msg_control = control;
    message.msg_controllen = CMSG_SPACE(sizeof(int) * max_fds);
  }
  ssize_t got;
  do got = recvmsg(fd, &message, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  while (got < 0 && errno == EINTR);
  if (got < 0) return -errno;
  *truncated = (message.msg_flags & MSG_CTRUNC) != 0;
  if (max_fds == 0) return got;
  for (cmsghdr* header = CMSG_FIRSTHDR(&message); header != nullptr; header = CMSG_NXTHDR(&message, header)) {
    if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const int* received = reinterpret_cast<const int*>(CMSG_DATA(header));
    for (size_t i = 0; i < count; i++) {
      if (MSG_CMSG_CLOEXEC == 0) set_cloexec(received[i]);
      fds->push_back(received[i]);
    }
  }
  return got;
}

}  // namespace prefork
