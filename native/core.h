// The C++ core's interface: plain syscalls wrapped in functions that return -errno, no napi types.
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

namespace prefork {

// A failed core call: -errno and the syscall that failed (a string literal).
struct Failure {
  int error = 0;  // -errno, 0 when the call succeeded
  const char* syscall = "";
};

// ---- socket.cc -----------------------------------------------------------

struct ListenSocketOptions {
  const char* host;  // numeric IPv4 or IPv6 address
  int family;        // 4 or 6
  int port;          // 0 picks a free port
  bool ipv6_only;    // IPV6_V6ONLY for family 6
  int backlog;       // < 0: bind only, the worker's listen() starts it
  bool reuse_port = true;  // false: a probe that fails EADDRINUSE where any other socket is bound
};

struct ListenSocket {
  int fd = -1;
  int port = 0;  // the bound port (getsockname)
};

Failure create_listen_socket(const ListenSocketOptions& options, ListenSocket* out);

// What a socket handed to us (systemd's socket activation) is.
struct SocketInfo {
  int family = 0;  // 4, 6, or 0 for anything else
  bool stream = false;
  bool listening = false;
  bool reuse_port = false;
  std::string host;  // numeric
  int port = 0;
  bool connected = false;  // it has a peer (getpeername)
};
Failure inspect_socket(int fd, SocketInfo* out);

// A listening TCP socket's accept queue: connections waiting (length) and the backlog (limit). Linux only.
Failure listen_queue(int fd, uint32_t* length, uint32_t* limit);

// ---- reuseport.cc --------------------------------------------------------

// listen(2) on a bound socket: it joins its reuseport group now, after the group's current members.
Failure start_listening(int fd, int backlog);

// One classic BPF instruction (struct sock_filter).
struct Instruction {
  uint16_t code;
  uint8_t jt;
  uint8_t jf;
  uint32_t k;
};
// Sets the reuseport group's program through any member socket (replacing the group's previous one).
// Linux only: -ENOPROTOOPT elsewhere or on kernels without it.
Failure attach_reuseport_program(int fd, const std::vector<Instruction>& program);
// Removes the group's program (Linux 5.8+): the kernel's hash again. -ENOENT when none is attached.
Failure detach_reuseport_program(int fd);

// ---- notify.cc -----------------------------------------------------------

// Sends `message` as one datagram to the AF_UNIX socket at `path` ("@name": abstract). sd_notify's transport.
Failure notify_datagram(const std::string& path, const std::string& message);

// ---- spawn.cc ------------------------------------------------------------

struct SpawnOptions {
  const char* file;
  char* const* argv;  // null-terminated
  char* const* envp;  // null-terminated
  const char* cwd;    // nullptr: inherit
  // (parent fd, child fd) pairs: the child gets exactly these above 0-2.
  std::vector<std::pair<int, int>> fds;
  int64_t uid = -1;  // -1: unchanged (uid_t values reach 2^32-2, past int)
  int64_t gid = -1;
  bool set_groups = false;     // true: the supplementary groups become `groups` (root only)
  std::vector<gid_t> groups;
  std::vector<int> cpus;  // empty: inherit affinity
  bool process_group = false;
  int death_signal = 0;  // PR_SET_PDEATHSIG; 0: none
};

struct Spawned {
  pid_t pid = -1;
  int pidfd = -1;  // -1 where pidfd_open is unavailable: wait in a thread (wait_exited), then reap
};

// On failure in the child (exec, setuid, chdir…) the child is reaped before returning. Main thread only.
Failure spawn(const SpawnOptions& options, Spawned* out);

// A user's primary group and every group it belongs to (getpwuid_r + getgrouplist), as initgroups() would
// set them. -ENOENT: no such user.
Failure user_groups(uid_t uid, gid_t* primary, std::vector<gid_t>* groups);

// ---- reap.cc -------------------------------------------------------------

struct ExitStatus {
  int code = -1;    // exit code, or -1 when killed by a signal
  int signal = 0;   // terminating signal number, or 0
};

// 1: exited (status filled), 0: still running, -errno: error. Never blocks.
int wait_pidfd(int pidfd, ExitStatus* status);
// Blocks until pid has exited, without reaping it (WNOWAIT): until the main thread reaps it, the pid cannot
// be recycled, so a kill() in between reaches the zombie. 0 or -errno. For the thread fallback.
int wait_exited(pid_t pid);
// Reaps pid if it has exited: 1 (status filled), 0 still running, -errno.
int reap(pid_t pid, ExitStatus* status);

// ---- channel.cc ----------------------------------------------------------

Failure socket_pair(int fds[2]);
// Bytes sent (>= 0) or -errno (-EAGAIN when the socket buffer is full). fds ride with the first byte.
ssize_t channel_send(int fd, const char* data, size_t length, const std::vector<int>& fds);
// Bytes read (0: peer closed) or -errno; received fds (CLOEXEC) are appended to fds, at most max_fds (rounded up
// to the control buffer's alignment). With max_fds 0 no fd is ever installed in this process (the kernel drops
// them). *truncated: the peer sent fds that were dropped (more than one read takes, or any at all with max_fds 0).
ssize_t channel_recv(int fd, char* data, size_t length, size_t max_fds, std::vector<int>* fds, bool* truncated);
int set_cloexec(int fd);
int dup_cloexec(int fd);
// Pid of the process that created the peer end of a Unix socket (SO_PEERCRED), or -errno.
int peer_pid(int fd);

// ---- shm.cc --------------------------------------------------------------

// A zero-filled shared memory region of `bytes`, as a CLOEXEC fd, or -errno. Sealed where memfd has seals:
// no process can shrink or grow it (a shrink would SIGBUS every process that maps it).
int create_shared_region(size_t bytes);
// Maps the whole region MAP_SHARED; nullptr and *error = -errno on failure (-EINVAL when the region's
// size is not `bytes`).
void* map_shared_region(int fd, size_t bytes, int* error);
void unmap_shared_region(void* address, size_t bytes);

// ---- watchdog.cc ---------------------------------------------------------

// A thread that SIGKILLs this process `grace_ms` after the peer of the Unix socket `fd` has gone away.
// It watches its own duplicate of fd: JavaScript may close fd.
void start_orphan_watchdog(int fd, int grace_ms);

}  // namespace prefork
