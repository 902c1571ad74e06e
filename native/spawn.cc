// fork + execve with an exact fd map, privileges, affinity and parent-death signal (DESIGN.md's syscall rules).
// On Linux the child is a clone(CLONE_VM | CLONE_VFORK), as glibc's posix_spawn does: no page tables are
// copied, so spawning costs the same whatever the primary's heap. The child therefore shares our memory
// until execve: it calls raw syscalls only where glibc would touch process-wide state (setuid and friends
// signal every thread glibc knows of, raise() uses the cached tid), and writes nothing but its own stack.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>

#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "core.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#if defined(__linux__) && !defined(SYS_close_range)
#define SYS_close_range 436  // the same number on every architecture (Linux 5.9+); old headers lack it
#endif

namespace prefork {

namespace {

// What the child writes to the CLOEXEC pipe when a step fails: errno and which step.
struct ChildFailure {
  int error;
  int step;
};

const char* const kStepNames[] = {"setpgid", "setgroups", "setgid",        "setuid", "prctl",
                                  "sched_setaffinity", "chdir", "fcntl", "dup2",   "execve"};
enum Step { kSetpgid, kSetgroups, kSetgid, kSetuid, kPrctl, kAffinity, kChdir, kFcntl, kDup2, kExecve };

// Everything the child needs, computed before fork: the child may not allocate.
struct ChildPlan {
  const SpawnOptions* options;
  pid_t parent;
  int error_pipe;       // write end; the child moves it above every target first
  int error_pipe_read;  // the parent's end, closed in the child
  std::vector<int> sorted_targets;  // child fd numbers >= 3, ascending
  std::vector<int> moved;           // scratch: one slot per fd mapping
  int first_free;                   // above every target: where sources are moved first
  bool close_range;                 // false: the fallbacks, as on Linux < 5.11 (PREFORK_TEST_NO_CLOSE_RANGE, for tests)
#ifdef __linux__
  cpu_set_t cpus;
#endif
};

[[noreturn]] void fail(const ChildPlan& plan, Step step) {
  ChildFailure failure{errno, step};
  ssize_t written;
  do written = write(plan.error_pipe, &failure, sizeof(failure));
  while (written < 0 && errno == EINTR);
  _exit(127);
}

#ifdef __linux__
// Raw syscalls: glibc's wrappers would make every thread of the primary change its ids too.
int raw_setgroups(size_t count, const gid_t* groups) { return static_cast<int>(syscall(SYS_setgroups, count, groups)); }
int raw_setgid(gid_t gid) { return static_cast<int>(syscall(SYS_setgid, gid)); }
int raw_setuid(uid_t uid) { return static_cast<int>(syscall(SYS_setuid, uid)); }
#else
int raw_setgroups(size_t count, const gid_t* groups) { return setgroups(static_cast<int>(count), groups); }
int raw_setgid(gid_t gid) { return setgid(gid); }
int raw_setuid(uid_t uid) { return setuid(uid); }
#endif

void mark_cloexec(int fd) {
  int flags = fcntl(fd, F_GETFD);
  if (flags >= 0 && !(flags & FD_CLOEXEC)) fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
}

#ifdef __linux__
struct LinuxDirent64 {
  uint64_t ino;
  int64_t off;
  unsigned short reclen;
  unsigned char type;
  char name[1];
};

// Before close_range (Linux < 5.11): the open fds from /proc/self/fd, read with raw getdents64 (no malloc,
// async-signal-safe), as glibc's fallback does. False when /proc cannot be read.
bool cloexec_listed(unsigned low, unsigned high) {
  int directory = static_cast<int>(syscall(SYS_openat, AT_FDCWD, "/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (directory < 0) return false;
  alignas(8) char buffer[4096];
  for (;;) {
    long got = syscall(SYS_getdents64, directory, buffer, sizeof(buffer));
    if (got <= 0) break;
    for (long offset = 0; offset < got;) {
      auto* entry = reinterpret_cast<LinuxDirent64*>(buffer + offset);
      offset += entry->reclen;
      unsigned fd = 0;
      bool number = entry->name[0] != '\0';
      for (const char* digit = entry->name; *digit != '\0'; digit++) {
        if (*digit < '0' || *digit > '9') number = false;
        else fd = fd * 10 + static_cast<unsigned>(*digit - '0');
      }
      if (number && fd >= low && fd <= high && static_cast<int>(fd) != directory) mark_cloexec(static_cast<int>(fd));
    }
  }
  close(directory);
  return true;
}
#endif

// Marks [low, high] close-on-exec so nothing but the fd map reaches the new program: every open fd, however
// high (Node raises RLIMIT_NOFILE to its hard limit).
void cloexec_range(unsigned low, unsigned high, bool use_close_range) {
#ifdef __linux__
  if (use_close_range && syscall(SYS_close_range, low, high, CLOSE_RANGE_CLOEXEC) == 0) return;
  if (cloexec_listed(low, high)) return;
#endif
  rlimit limit;
  rlim_t end = getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY ? limit.rlim_cur : 1U << 20;
  for (rlim_t fd = low; fd <= high && fd < end; fd++) mark_cloexec(static_cast<int>(fd));
}

// Runs between fork and exec: async-signal-safe calls only.
[[noreturn]] void run_child(ChildPlan& plan) {
  const SpawnOptions& options = *plan.options;

  // The error pipe may sit where a target fd goes (or on a closed stdio slot): move it out of the way,
  // or a dup2 would close it and an exec failure would read as success.
  close(plan.error_pipe_read);
  int moved_pipe = fcntl(plan.error_pipe, F_DUPFD_CLOEXEC, plan.first_free);
  if (moved_pipe < 0) fail(plan, kFcntl);
  close(plan.error_pipe);
  plan.error_pipe = moved_pipe;

  struct sigaction default_action;
  memset(&default_action, 0, sizeof(default_action));
  default_action.sa_handler = SIG_DFL;
  // Standard signals only, as libuv does: Node installs no real-time handlers, and exec resets the rest.
#ifdef SIGRTMIN
  const int last_signal = SIGRTMIN - 1;
#else
  const int last_signal = NSIG - 1;
#endif
  for (int signal_number = 1; signal_number <= last_signal; signal_number++) {
    if (signal_number != SIGKILL && signal_number != SIGSTOP) sigaction(signal_number, &default_action, nullptr);
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);

  if (options.process_group && setpgid(0, 0) < 0) fail(plan, kSetpgid);

  // Privileges first: a change of uid after PR_SET_PDEATHSIG clears it. Supplementary groups as asked
  // (initgroups for a user), never root's own.
  if (options.set_groups) {
    if (raw_setgroups(options.groups.size(), options.groups.data()) < 0) fail(plan, kSetgroups);
  } else if ((options.uid >= 0 || options.gid >= 0) && geteuid() == 0) {
    gid_t group = static_cast<gid_t>(options.gid);
    if (raw_setgroups(options.gid >= 0 ? 1 : 0, &group) < 0) fail(plan, kSetgroups);
  }
  if (options.gid >= 0 && raw_setgid(static_cast<gid_t>(options.gid)) < 0) fail(plan, kSetgid);
  if (options.uid >= 0 && raw_setuid(static_cast<uid_t>(options.uid)) < 0) fail(plan, kSetuid);

#ifdef __linux__
  if (options.death_signal != 0) {
    if (prctl(PR_SET_PDEATHSIG, options.death_signal) < 0) fail(plan, kPrctl);
    // The parent may have died before prctl: then nobody would send the signal.
    if (getppid() != plan.parent) kill(getpid(), options.death_signal);
  }
  if (!options.cpus.empty() && sched_setaffinity(0, sizeof(plan.cpus), &plan.cpus) < 0) fail(plan, kAffinity);
#endif

  if (options.cwd != nullptr && chdir(options.cwd) < 0) fail(plan, kChdir);

  // Move every source above every target first, so one dup2 cannot overwrite a later source.
  for (size_t i = 0; i < options.fds.size(); i++) {
    plan.moved[i] = fcntl(options.fds[i].first, F_DUPFD_CLOEXEC, plan.first_free);
    if (plan.moved[i] < 0) fail(plan, kFcntl);
  }
  for (size_t i = 0; i < options.fds.size(); i++) {
    if (dup2(plan.moved[i], options.fds[i].second) < 0) fail(plan, kDup2);  // the copy is not CLOEXEC
  }
  // Node marks its stdio CLOEXEC: clear it or the new program has no stdout/stderr.
  for (int fd = 0; fd <= 2; fd++) {
    int flags = fcntl(fd, F_GETFD);
    if (flags >= 0 && (flags & FD_CLOEXEC)) fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
  }
  unsigned low = 3;
  for (int target : plan.sorted_targets) {
    if (static_cast<unsigned>(target) > low) cloexec_range(low, target - 1, plan.close_range);
    low = target + 1;
  }
  cloexec_range(low, ~0U, plan.close_range);

  execve(options.file, options.argv, options.envp);
  fail(plan, kExecve);
}

#ifdef __linux__
const size_t kChildStackBytes = 256 * 1024;

int run_child_entry(void* plan) { run_child(*static_cast<ChildPlan*>(plan)); }

const char* const kStartChildCall = "clone";

// The child runs on a stack of its own while it shares our memory, with a guard page below it, as
// posix_spawn does: an overflow faults instead of writing over the primary's memory. CLONE_VFORK suspends
// this thread until the child has exec'd or exited, so the stack is unmapped only after that.
pid_t start_child(ChildPlan& plan) {
  size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  void* stack = mmap(nullptr, kChildStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) return -1;
  if (mprotect(stack, page, PROT_NONE) < 0) {
    int error = errno;
    munmap(stack, kChildStackBytes + page);
    errno = error;
    return -1;
  }
  pid_t pid = clone(run_child_entry, static_cast<char*>(stack) + page + kChildStackBytes, CLONE_VM | CLONE_VFORK | SIGCHLD, &plan);
  int error = errno;
  munmap(stack, kChildStackBytes + page);
  errno = error;
  return pid;
}

// PR_SET_PDEATHSIG fires when the forking thread exits: children are started from the main thread only.
bool on_main_thread() { return syscall(SYS_gettid) == getpid(); }
#else
bool on_main_thread() { return true; }

const char* const kStartChildCall = "fork";

pid_t start_child(ChildPlan& plan) {
  pid_t pid = fork();
  if (pid == 0) run_child(plan);
  return pid;
}
#endif

int open_error_pipe(int fds[2]) {
#ifdef __linux__
  return pipe2(fds, O_CLOEXEC);
#else
  if (pipe(fds) < 0) return -1;
  set_cloexec(fds[0]);
  set_cloexec(fds[1]);
  return 0;
#endif
}

}  // namespace

Failure user_groups(uid_t uid, gid_t* primary, std::vector<gid_t>* groups) {
  long suggested = sysconf(_SC_GETPW_R_SIZE_MAX);
  std::vector<char> buffer(suggested > 0 ? static_cast<size_t>(suggested) : 16384);
  passwd entry;
  passwd* found = nullptr;
  int error;
  while ((error = getpwuid_r(uid, &entry, buffer.data(), buffer.size(), &found)) == ERANGE) buffer.resize(buffer.size() * 2);
  if (error != 0) return {-error, "getpwuid_r"};
  if (found == nullptr) return {-ENOENT, "getpwuid_r"};
  *primary = entry.pw_gid;
  int count = 64;
  groups->resize(count);
  for (;;) {
#ifdef __APPLE__
    int found_groups = getgrouplist(entry.pw_name, static_cast<int>(entry.pw_gid), reinterpret_cast<int*>(groups->data()), &count);
#else
    int found_groups = getgrouplist(entry.pw_name, entry.pw_gid, groups->data(), &count);
#endif
    if (found_groups >= 0) break;
    count = std::max(count, static_cast<int>(groups->size()) * 2);
    groups->resize(count);
  }
  groups->resize(count);
  return {};
}

Failure spawn(const SpawnOptions& options, Spawned* out) {
  if (!on_main_thread()) return {-EPERM, "spawn (not on the main thread)"};
  ChildPlan plan;
  plan.options = &options;
  plan.parent = getpid();
  plan.moved.resize(options.fds.size());
  int highest = 2;
  for (const auto& mapping : options.fds) {
    if (mapping.second >= 3) plan.sorted_targets.push_back(mapping.second);
    highest = std::max(highest, mapping.second);
  }
  std::sort(plan.sorted_targets.begin(), plan.sorted_targets.end());
  plan.first_free = highest + 1;
  plan.close_range = getenv("PREFORK_TEST_NO_CLOSE_RANGE") == nullptr;
#ifdef __linux__
  CPU_ZERO(&plan.cpus);
  for (int cpu : options.cpus) CPU_SET(cpu, &plan.cpus);
#endif

  int error_pipe[2];
  if (open_error_pipe(error_pipe) < 0) return {-errno, "pipe"};
  plan.error_pipe = error_pipe[1];
  plan.error_pipe_read = error_pipe[0];

  // Signals stay blocked until the child has reset every handler: Node's handlers must not run there.
  // sigprocmask sets this thread's mask on Linux and macOS, as pthread_sigmask does, and its glibc symbol is
  // old enough for the prebuild (pthread_sigmask's is GLIBC_2.32).
  sigset_t all, previous;
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, &previous);
  pid_t pid = start_child(plan);
  int fork_errno = errno;
  sigprocmask(SIG_SETMASK, &previous, nullptr);
  close(error_pipe[1]);
  if (pid < 0) {
    close(error_pipe[0]);
    return {-fork_errno, kStartChildCall};
  }

  ChildFailure failure;
  ssize_t got;
  do got = read(error_pipe[0], &failure, sizeof(failure));
  while (got < 0 && errno == EINTR);
  close(error_pipe[0]);
  if (got == sizeof(failure)) {
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return {-failure.error, kStepNames[failure.step]};
  }

  out->pid = pid;
  out->pidfd = -1;
#if defined(__linux__) && defined(SYS_pidfd_open)
  out->pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));  // always CLOEXEC
#endif
  return {};
}

}  // namespace prefork
