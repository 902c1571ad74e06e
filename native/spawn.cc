// fork + execve with an exact fd map, privileges, affinity and parent-death signal (DESIGN.md's syscall rules).
// On Linux the child is a clone(CLONE_VM | CLONE_VFORK), as glibc's posix_spawn does: no page tables are
// copied, so spawning costs the same whatever the primary's heap. The child therefore shares our memory
// until execve: it calls raw syscalls only where glibc would touch process-wide state (setuid and friends
// signal every thread glibc knows of, raise() uses the cached tid), and writes nothing but its own stack.
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
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

// Marks [low, high] close-on-exec so nothing but the fd map reaches the new program.
void cloexec_range(unsigned low, unsigned high) {
#if defined(__linux__) && defined(SYS_close_range)
  if (syscall(SYS_close_range, low, high, CLOSE_RANGE_CLOEXEC) == 0) return;
#endif
  long limit = sysconf(_SC_OPEN_MAX);
  if (limit < 0 || limit > 65536) limit = 65536;
  for (long fd = low; fd <= static_cast<long>(high) && fd < limit; fd++) {
    int flags = fcntl(static_cast<int>(fd), F_GETFD);
    if (flags >= 0) fcntl(static_cast<int>(fd), F_SETFD, flags | FD_CLOEXEC);
  }
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

  // Privileges first: a change of uid after PR_SET_PDEATHSIG clears it.
  if ((options.uid >= 0 || options.gid >= 0) && geteuid() == 0) {
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
    if (static_cast<unsigned>(target) > low) cloexec_range(low, target - 1);
    low = target + 1;
  }
  cloexec_range(low, ~0U);

  execve(options.file, options.argv, options.envp);
  fail(plan, kExecve);
}

#ifdef __linux__
// The child's stack while it shares our memory. spawn() runs on the main thread only, and CLONE_VFORK
// suspends it until the child has exec'd or exited, so one static stack is never used twice at once.
alignas(64) char child_stack[256 * 1024];

int run_child_entry(void* plan) { run_child(*static_cast<ChildPlan*>(plan)); }

const char* const kStartChildCall = "clone";

pid_t start_child(ChildPlan& plan) {
  return clone(run_child_entry, child_stack + sizeof(child_stack), CLONE_VM | CLONE_VFORK | SIGCHLD, &plan);
}
#else
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

Failure spawn(const SpawnOptions& options, Spawned* out) {
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
#ifdef __linux__
  CPU_ZERO(&plan.cpus);
  for (int cpu : options.cpus) CPU_SET(cpu, &plan.cpus);
#endif

  int error_pipe[2];
  if (open_error_pipe(error_pipe) < 0) return {-errno, "pipe"};
  plan.error_pipe = error_pipe[1];
  plan.error_pipe_read = error_pipe[0];

  // Signals stay blocked until the child has reset every handler: Node's handlers must not run there.
  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &previous);
  pid_t pid = start_child(plan);
  int fork_errno = errno;
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
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
