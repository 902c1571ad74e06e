// Listening TCP sockets with SO_REUSEADDR + SO_REUSEPORT, created by the primary for its workers.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core.h"

namespace prefork {

namespace {

int open_socket(int domain) {
#ifdef SOCK_CLOEXEC
  return socket(domain, SOCK_STREAM | SOCK_CLOEXEC, 0);
#else
  int fd = socket(domain, SOCK_STREAM, 0);
  if (fd >= 0) set_cloexec(fd);
  return fd;
#endif
}

int set_flag(int fd, int level, int name, int value) {
  return setsockopt(fd, level, name, &value, sizeof(value));
}

}  // namespace

Failure create_listen_socket(const ListenSocketOptions& options, ListenSocket* out) {
  sockaddr_storage address;
  memset(&address, 0, sizeof(address));
  socklen_t address_length;
  if (options.family == 6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&address);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(options.port);
    if (inet_pton(AF_INET6, options.host, &in6->sin6_addr) != 1) return {-EINVAL, "inet_pton"};
    address_length = sizeof(*in6);
  } else {
    auto* in4 = reinterpret_cast<sockaddr_in*>(&address);
    in4->sin_family = AF_INET;
    in4->sin_port = htons(options.port);
    if (inet_pton(AF_INET, options.host, &in4->sin_addr) != 1) return {-EINVAL, "inet_pton"};
    address_length = sizeof(*in4);
  }

  int fd = open_socket(address.ss_family);
  if (fd < 0) return {-errno, "socket"};

  Failure failure;
  if (set_flag(fd, SOL_SOCKET, SO_REUSEADDR, 1) < 0 || (options.reuse_port && set_flag(fd, SOL_SOCKET, SO_REUSEPORT, 1) < 0)) {
    failure = {-errno, "setsockopt"};
  } else if (options.family == 6 && set_flag(fd, IPPROTO_IPV6, IPV6_V6ONLY, options.ipv6_only ? 1 : 0) < 0) {
    failure = {-errno, "setsockopt"};
  } else if (bind(fd, reinterpret_cast<sockaddr*>(&address), address_length) < 0) {
    failure = {-errno, "bind"};
  } else if (options.backlog >= 0 && listen(fd, options.backlog) < 0) {
    failure = {-errno, "listen"};
  } else if (getsockname(fd, reinterpret_cast<sockaddr*>(&address), &address_length) < 0) {
    failure = {-errno, "getsockname"};
  }
  if (failure.error != 0) {
    close(fd);
    return failure;
  }

  out->fd = fd;
  out->port = ntohs(address.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&address)->sin6_port
                                                  : reinterpret_cast<sockaddr_in*>(&address)->sin_port);
  return {};
}

}  // namespace prefork

namespace prefork {

Failure inspect_socket(int fd, SocketInfo* out) {
  int type = 0;
  socklen_t length = sizeof(type);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) < 0) return {-errno, "getsockopt"};
  out->stream = type == SOCK_STREAM;
#ifdef SO_ACCEPTCONN
  int listening = 0;
  length = sizeof(listening);
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) < 0) return {-errno, "getsockopt"};
  out->listening = listening != 0;
#endif
  int reuse_port = 0;
  length = sizeof(reuse_port);
  if (getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &reuse_port, &length) == 0) out->reuse_port = reuse_port != 0;
  sockaddr_storage address;
  socklen_t address_length = sizeof(address);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&address), &address_length) < 0) return {-errno, "getsockname"};
  char host[INET6_ADDRSTRLEN] = "";
  if (address.ss_family == AF_INET) {
    auto* in4 = reinterpret_cast<sockaddr_in*>(&address);
    inet_ntop(AF_INET, &in4->sin_addr, host, sizeof(host));
    out->family = 4;
    out->port = ntohs(in4->sin_port);
  } else if (address.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&address);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
    out->family = 6;
    out->port = ntohs(in6->sin6_port);
  } else {
    out->family = 0;  // not an IP socket (AF_UNIX…)
  }
  out->host = host;
  sockaddr_storage peer;
  socklen_t peer_length = sizeof(peer);
  out->connected = getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_length) == 0;
  return {};
}

Failure listen_queue(int fd, uint32_t* length, uint32_t* limit) {
#if defined(__linux__) && defined(TCP_INFO)
  tcp_info info;
  memset(&info, 0, sizeof(info));
  socklen_t size = sizeof(info);
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &size) < 0) return {-errno, "getsockopt"};
  // For a listening socket, Linux reports the accept queue's length in tcpi_unacked and its limit in tcpi_sacked.
  *length = info.tcpi_unacked;
  *limit = info.tcpi_sacked;
  return {};
#else
  (void)fd;
  (void)length;
  (void)limit;
  return {-ENOSYS, "getsockopt"};
#endif
}

}  // namespace prefork
