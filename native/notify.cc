// sd_notify: one datagram to the service manager's AF_UNIX socket ($NOTIFY_SOCKET), which Node cannot send
// (it has no datagram Unix sockets). A path, or "@name" for the abstract namespace.
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core.h"

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

namespace prefork {

Failure notify_datagram(const std::string& path, const std::string& message) {
  sockaddr_un address;
  memset(&address, 0, sizeof(address));
  address.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(address.sun_path)) return {-EINVAL, "connect"};
  memcpy(address.sun_path, path.data(), path.size());
  if (path[0] == '@') address.sun_path[0] = '\0';  // abstract namespace: not NUL-terminated, the length says
  socklen_t length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + (path[0] == '@' ? 0 : 1));
#ifdef SOCK_CLOEXEC
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
#else
  int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
  if (fd >= 0) set_cloexec(fd);
#endif
  if (fd < 0) return {-errno, "socket"};
  ssize_t sent = sendto(fd, message.data(), message.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&address), length);
  Failure failure;
  if (sent < 0) failure = {-errno, "sendto"};
  close(fd);
  return failure;
}

}  // namespace prefork
