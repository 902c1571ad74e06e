// The only file that includes napi.h: unpacks arguments, throws Node-style errors, runs callbacks.
// Validation with user-facing messages lives in TypeScript; the checks here are a second guard.
#include <napi.h>
#include <uv.h>

#include <string>
#include <thread>

#include "core.h"

#ifdef PREFORK_BUILT_WITH_CMAKE
#define PREFORK_BUILD_SYSTEM "cmake-js"
#else
#define PREFORK_BUILD_SYSTEM "node-gyp"
#endif

namespace {

using prefork::Failure;

// An Error like Node's own: "bind EADDRINUSE 0.0.0.0:3000" with errno, code and syscall.
Napi::Error SystemError(Napi::Env env, int error, const char* syscall, const std::string& detail = "") {
  const char* code = uv_err_name(error);
  std::string message = std::string(syscall) + " " + code + (detail.empty() ? "" : " " + detail);
  Napi::Error failure = Napi::Error::New(env, message);
  failure.Set("errno", Napi::Number::New(env, error));
  failure.Set("code", Napi::String::New(env, code));
  failure.Set("syscall", Napi::String::New(env, syscall));
  return failure;
}

int IntArgument(const Napi::CallbackInfo& info, size_t index) {
  if (!info[index].IsNumber()) throw Napi::TypeError::New(info.Env(), "prefork native: expected a number argument");
  return info[index].As<Napi::Number>().Int32Value();
}

std::vector<std::string> StringList(Napi::Env env, Napi::Value value) {
  if (!value.IsArray()) throw Napi::TypeError::New(env, "prefork native: expected an array of strings");
  Napi::Array array = value.As<Napi::Array>();
  std::vector<std::string> strings;
  for (uint32_t i = 0; i < array.Length(); i++) strings.push_back(array.Get(i).As<Napi::String>().Utf8Value());
  return strings;
}

std::vector<char*> NullTerminated(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  for (auto& text : strings) pointers.push_back(&text[0]);
  pointers.push_back(nullptr);
  return pointers;
}

// Calls into JS from a libuv callback: a throw becomes 'uncaughtException', as with Node's own callbacks.
void ReportThrow(Napi::Env env, const Napi::Error& error) { napi_fatal_exception(env, error.Value()); }

Napi::Value ExitStatusValue(Napi::Env env, const prefork::ExitStatus& status) {
  Napi::Array pair = Napi::Array::New(env, 2);
  pair.Set(0u, Napi::Number::New(env, status.code));
  pair.Set(1u, Napi::Number::New(env, status.signal));
  return pair;
}

// createListenSocket(host, family, port, ipv6Only, backlog, reusePort = true) -> [fd, port]
Napi::Value CreateListenSocket(const Napi::CallbackInfo& info) {
  std::string host = info[0].As<Napi::String>().Utf8Value();
  prefork::ListenSocketOptions options{host.c_str(), IntArgument(info, 1), IntArgument(info, 2),
                                       info[3].ToBoolean().Value(), IntArgument(info, 4)};
  options.reuse_port = !(info.Length() > 5 && info[5].IsBoolean() && !info[5].As<Napi::Boolean>().Value());
  prefork::ListenSocket socket;
  Failure failure = prefork::create_listen_socket(options, &socket);
  if (failure.error != 0) {
    Napi::Error error = SystemError(info.Env(), failure.error, failure.syscall, host + ":" + std::to_string(options.port));
    error.Set("address", Napi::String::New(info.Env(), host));
    error.Set("port", Napi::Number::New(info.Env(), options.port));
    throw error;
  }
  Napi::Array result = Napi::Array::New(info.Env(), 2);
  result.Set(0u, Napi::Number::New(info.Env(), socket.fd));
  result.Set(1u, Napi::Number::New(info.Env(), socket.port));
  return result;
}

// inspectSocket(fd) -> { family, stream, listening, reusePort, host, port, connected }
Napi::Value InspectSocket(const Napi::CallbackInfo& info) {
  prefork::SocketInfo socket;
  Failure failure = prefork::inspect_socket(IntArgument(info, 0), &socket);
  if (failure.error != 0) throw SystemError(info.Env(), failure.error, failure.syscall);
  Napi::Object result = Napi::Object::New(info.Env());
  result.Set("family", Napi::Number::New(info.Env(), socket.family));
  result.Set("stream", Napi::Boolean::New(info.Env(), socket.stream));
  result.Set("listening", Napi::Boolean::New(info.Env(), socket.listening));
  result.Set("reusePort", Napi::Boolean::New(info.Env(), socket.reuse_port));
  result.Set("host", Napi::String::New(info.Env(), socket.host));
  result.Set("port", Napi::Number::New(info.Env(), socket.port));
  result.Set("connected", Napi::Boolean::New(info.Env(), socket.connected));
  return result;
}

// listenQueue(fd) -> [length, limit]
Napi::Value ListenQueue(const Napi::CallbackInfo& info) {
  uint32_t length = 0;
  uint32_t limit = 0;
  Failure failure = prefork::listen_queue(IntArgument(info, 0), &length, &limit);
  if (failure.error != 0) throw SystemError(info.Env(), failure.error, failure.syscall);
  Napi::Array result = Napi::Array::New(info.Env(), 2);
  result.Set(0u, Napi::Number::New(info.Env(), length));
  result.Set(1u, Napi::Number::New(info.Env(), limit));
  return result;
}

// startListening(fd, backlog)
Napi::Value StartListening(const Napi::CallbackInfo& info) {
  Failure failure = prefork::start_listening(IntArgument(info, 0), IntArgument(info, 1));
  if (failure.error != 0) throw SystemError(info.Env(), failure.error, failure.syscall);
  return info.Env().Undefined();
}

// attachReuseportProgram(fd, Uint32Array of [code, jt, jf, k] per instruction)
Napi::Value AttachReuseportProgram(const Napi::CallbackInfo& info) {
  if (!info[1].IsTypedArray()) throw Napi::TypeError::New(info.Env(), "prefork native: expected a Uint32Array program");
  Napi::Uint32Array words = info[1].As<Napi::Uint32Array>();
  std::vector<prefork::Instruction> program(words.ElementLength() / 4);
  for (size_t i = 0; i < program.size(); i++) {
    program[i] = {static_cast<uint16_t>(words[4 * i]), static_cast<uint8_t>(words[4 * i + 1]),
                  static_cast<uint8_t>(words[4 * i + 2]), words[4 * i + 3]};
  }
  Failure failure = prefork::attach_reuseport_program(IntArgument(info, 0), program);
  if (failure.error != 0) throw SystemError(info.Env(), failure.error, failure.syscall, "SO_ATTACH_REUSEPORT_CBPF");
  return info.Env().Undefined();
}

// detachReuseportProgram(fd)
Napi::Value DetachReuseportProgram(const Napi::CallbackInfo& info) {
  Failure failure = prefork::detach_reuseport_program(IntArgument(info, 0));
  if (failure.error != 0) throw SystemError(info.Env(), failure.error, failure.syscall, "SO_DETACH_REUSEPORT_BPF");
  return info.Env().Undefined();
}

// notify(path, message): one datagram (sd_notify)
Napi::Value Notify(const Napi::CallbackInfo& info) {
  std::string path = info[0].As<Napi::String>().Utf8Value();
  std::string message = info[1].As<Napi::String>().Utf8Value();
  Failure failure = prefork::notify_datagram(path, message);
  if (failure.error != 0) throw SystemError(info.Env(), failure.error, failure.syscall, path);
  return info.Env().Undefined();
}

// reapExited(pid) -> null while it runs, [code, signal] once reaped
Napi::Value ReapExited(const Napi::CallbackInfo& info) {
  prefork::ExitStatus status;
  int result = prefork::reap(IntArgument(info, 0), &status);
  if (result < 0) throw SystemError(info.Env(), result, "waitpid");
  if (result == 0) return info.Env().Null();
  return ExitStatusValue(info.Env(), status);
}

// spawn({ file, args, env, cwd, fds: [[parentFd, childFd]…], uid, gid, cpus, processGroup, deathSignal })
//   -> [pid, pidfd]
Napi::Value Spawn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object request = info[0].As<Napi::Object>();
  std::string file = request.Get("file").As<Napi::String>().Utf8Value();
  std::vector<std::string> args = StringList(env, request.Get("args"));
  std::vector<std::string> environment = StringList(env, request.Get("env"));
  std::vector<char*> argv = NullTerminated(args);
  std::vector<char*> envp = NullTerminated(environment);
  Napi::Value cwd_value = request.Get("cwd");
  std::string cwd = cwd_value.IsString() ? cwd_value.As<Napi::String>().Utf8Value() : "";

  prefork::SpawnOptions options;
  options.file = file.c_str();
  options.argv = argv.data();
  options.envp = envp.data();
  options.cwd = cwd_value.IsString() ? cwd.c_str() : nullptr;
  Napi::Array fds = request.Get("fds").As<Napi::Array>();
  for (uint32_t i = 0; i < fds.Length(); i++) {
    Napi::Array pair = fds.Get(i).As<Napi::Array>();
    options.fds.emplace_back(pair.Get(0u).As<Napi::Number>().Int32Value(), pair.Get(1u).As<Napi::Number>().Int32Value());
  }
  Napi::Array cpus = request.Get("cpus").As<Napi::Array>();
  for (uint32_t i = 0; i < cpus.Length(); i++) options.cpus.push_back(cpus.Get(i).As<Napi::Number>().Int32Value());
  options.uid = request.Get("uid").As<Napi::Number>().Int64Value();
  options.gid = request.Get("gid").As<Napi::Number>().Int64Value();
  Napi::Value groups = request.Get("groups");
  if (groups.IsArray()) {
    options.set_groups = true;
    Napi::Array list = groups.As<Napi::Array>();
    for (uint32_t i = 0; i < list.Length(); i++) options.groups.push_back(static_cast<gid_t>(list.Get(i).As<Napi::Number>().Int64Value()));
  }
  options.process_group = request.Get("processGroup").ToBoolean().Value();
  options.death_signal = request.Get("deathSignal").As<Napi::Number>().Int32Value();

  prefork::Spawned spawned;
  Failure failure = prefork::spawn(options, &spawned);
  if (failure.error != 0) {
    const std::string& path = std::string(failure.syscall) == "chdir" ? cwd : file;
    Napi::Error error = SystemError(env, failure.error, failure.syscall, path);
    error.Set("path", Napi::String::New(env, path));
    throw error;
  }
  Napi::Array result = Napi::Array::New(env, 2);
  result.Set(0u, Napi::Number::New(env, spawned.pid));
  result.Set(1u, Napi::Number::New(env, spawned.pidfd));
  return result;
}

// waitPidfd(pidfd) -> null while running, [code, signal] once exited (the child is reaped)
Napi::Value WaitPidfd(const Napi::CallbackInfo& info) {
  prefork::ExitStatus status;
  int result = prefork::wait_pidfd(IntArgument(info, 0), &status);
  if (result < 0) throw SystemError(info.Env(), result, "waitid");
  if (result == 0) return info.Env().Null();
  return ExitStatusValue(info.Env(), status);
}

// waitInThread(pid, callback(code, signal)): the fallback where pidfd_open is missing (node-pty's way). The
// thread only waits (WNOWAIT); the child is reaped here on the main thread, so until the callback runs its
// pid stays a zombie and cannot be recycled under a kill().
Napi::Value WaitInThread(const Napi::CallbackInfo& info) {
  pid_t pid = IntArgument(info, 0);
  auto notify = Napi::ThreadSafeFunction::New(info.Env(), info[1].As<Napi::Function>(), "prefork:waitpid", 0, 1);
  std::thread([pid, notify]() mutable {
    prefork::wait_exited(pid);
    notify.BlockingCall(new pid_t(pid), [](Napi::Env env, Napi::Function callback, pid_t* exited) {
      prefork::ExitStatus status;
      if (prefork::reap(*exited, &status) <= 0) status.code = -1;
      delete exited;
      Napi::Value pair = ExitStatusValue(env, status);
      try {
        callback.Call({pair.As<Napi::Array>().Get(0u), pair.As<Napi::Array>().Get(1u)});
      } catch (const Napi::Error& error) {
        ReportThrow(env, error);
      }
    });
    notify.Release();
  }).detach();
  return info.Env().Undefined();
}

// userGroups(uid) -> [primary gid, [every gid of the user]]; throws ENOENT for an unknown uid
Napi::Value UserGroups(const Napi::CallbackInfo& info) {
  gid_t primary;
  std::vector<gid_t> groups;
  Failure failure = prefork::user_groups(static_cast<uid_t>(info[0].As<Napi::Number>().Int64Value()), &primary, &groups);
  if (failure.error != 0) throw SystemError(info.Env(), failure.error, failure.syscall);
  Napi::Array list = Napi::Array::New(info.Env(), groups.size());
  for (size_t i = 0; i < groups.size(); i++) list.Set(static_cast<uint32_t>(i), Napi::Number::New(info.Env(), groups[i]));
  Napi::Array result = Napi::Array::New(info.Env(), 2);
  result.Set(0u, Napi::Number::New(info.Env(), primary));
  result.Set(1u, list);
  return result;
}

// socketPair() -> [fd, fd]
Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  int fds[2];
  Failure failure = prefork::socket_pair(fds);
  if (failure.error != 0) throw SystemError(info.Env(), failure.error, failure.syscall);
  Napi::Array result = Napi::Array::New(info.Env(), 2);
  result.Set(0u, Napi::Number::New(info.Env(), fds[0]));
  result.Set(1u, Napi::Number::New(info.Env(), fds[1]));
  return result;
}

// channelSend(fd, buffer, offset, fds) -> bytes sent, 0 when the socket buffer is full
Napi::Value ChannelSend(const Napi::CallbackInfo& info) {
  int fd = IntArgument(info, 0);
  Napi::Buffer<char> buffer = info[1].As<Napi::Buffer<char>>();
  size_t offset = static_cast<size_t>(IntArgument(info, 2));
  std::vector<int> fds;
  Napi::Array fd_list = info[3].As<Napi::Array>();
  for (uint32_t i = 0; i < fd_list.Length(); i++) fds.push_back(fd_list.Get(i).As<Napi::Number>().Int32Value());
  ssize_t sent = prefork::channel_send(fd, buffer.Data() + offset, buffer.Length() - offset, fds);
  if (sent == -EAGAIN || sent == -EWOULDBLOCK) return Napi::Number::New(info.Env(), 0);
  if (sent < 0) throw SystemError(info.Env(), static_cast<int>(sent), "sendmsg");
  return Napi::Number::New(info.Env(), static_cast<double>(sent));
}

// channelRecv(fd, buffer, maxFds) -> null when nothing is waiting, else [bytes (0: peer closed), fds, truncated]
Napi::Value ChannelRecv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = IntArgument(info, 0);
  Napi::Buffer<char> buffer = info[1].As<Napi::Buffer<char>>();
  int max_fds = IntArgument(info, 2);
  std::vector<int> fds;
  bool truncated = false;
  ssize_t got = prefork::channel_recv(fd, buffer.Data(), buffer.Length(), static_cast<size_t>(max_fds < 0 ? 0 : max_fds), &fds, &truncated);
  if (got == -EAGAIN || got == -EWOULDBLOCK) return env.Null();
  if (got < 0) throw SystemError(env, static_cast<int>(got), "recvmsg");
  Napi::Array fd_list = Napi::Array::New(env, fds.size());
  for (size_t i = 0; i < fds.size(); i++) fd_list.Set(static_cast<uint32_t>(i), Napi::Number::New(env, fds[i]));
  Napi::Array result = Napi::Array::New(env, 3);
  result.Set(0u, Napi::Number::New(env, static_cast<double>(got)));
  result.Set(1u, fd_list);
  result.Set(2u, Napi::Boolean::New(env, truncated));
  return result;
}

Napi::Value SetCloexec(const Napi::CallbackInfo& info) {
  int result = prefork::set_cloexec(IntArgument(info, 0));
  if (result < 0) throw SystemError(info.Env(), result, "fcntl");
  return info.Env().Undefined();
}

Napi::Value DupCloexec(const Napi::CallbackInfo& info) {
  int result = prefork::dup_cloexec(IntArgument(info, 0));
  if (result < 0) throw SystemError(info.Env(), result, "fcntl");
  return Napi::Number::New(info.Env(), result);
}

// peerPid(fd) -> pid of the peer of a Unix socket, or -errno (not a socket, no peer…): never throws.
Napi::Value PeerPid(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), prefork::peer_pid(IntArgument(info, 0)));
}

// startOrphanWatchdog(fd, graceMs): SIGKILL this process graceMs after fd's peer is gone
Napi::Value StartOrphanWatchdog(const Napi::CallbackInfo& info) {
  prefork::start_orphan_watchdog(IntArgument(info, 0), IntArgument(info, 1));
  return info.Env().Undefined();
}

// createSharedRegion(bytes) -> fd of a zero-filled shared memory region
Napi::Value CreateSharedRegion(const Napi::CallbackInfo& info) {
  int fd = prefork::create_shared_region(static_cast<size_t>(info[0].As<Napi::Number>().Int64Value()));
  if (fd < 0) throw SystemError(info.Env(), fd, "memfd_create");
  return Napi::Number::New(info.Env(), fd);
}

// mapSharedRegion(fd, bytes) -> an ArrayBuffer over the MAP_SHARED mapping, unmapped when collected
Napi::Value MapSharedRegion(const Napi::CallbackInfo& info) {
  size_t bytes = static_cast<size_t>(info[1].As<Napi::Number>().Int64Value());
  int error = 0;
  void* address = prefork::map_shared_region(IntArgument(info, 0), bytes, &error);
  if (address == nullptr) throw SystemError(info.Env(), error, "mmap");
  return Napi::ArrayBuffer::New(
      info.Env(), address, bytes, [](Napi::Env, void* data, size_t* length) {
        prefork::unmap_shared_region(data, *length);
        delete length;
      },
      new size_t(bytes));
}

// A uv_poll_t on one fd, calling back (status, events) on the main thread. Heap-allocated apart from
// the JS object because uv_close completes later; closed by close() or by the env's cleanup hook
// (without which Node aborts when a worker_thread that loaded the addon exits).
struct Watch {
  uv_poll_t handle;
  Napi::FunctionReference callback;
  Napi::AsyncContext* context = nullptr;
  napi_async_cleanup_hook_handle cleanup = nullptr;
  Watch** owner = nullptr;  // the Poller's pointer to this watch, cleared on close
  bool closing = false;

  static void OnEvent(uv_poll_t* handle, int status, int events) {
    Watch* watch = static_cast<Watch*>(handle->data);
    Napi::Env env = watch->callback.Env();
    Napi::HandleScope scope(env);
    try {
      watch->callback.MakeCallback(env.Global(), {Napi::Number::New(env, status), Napi::Number::New(env, events)},
                                   *watch->context);
    } catch (const Napi::Error& error) {
      ReportThrow(env, error);
    }
  }

  static void OnCleanup(napi_async_cleanup_hook_handle, void* data) { static_cast<Watch*>(data)->Close(); }

  static void OnClosed(uv_handle_t* handle) {
    Watch* watch = static_cast<Watch*>(handle->data);
    napi_remove_async_cleanup_hook(watch->cleanup);
    delete watch->context;
    delete watch;
  }

  void Close() {
    if (owner != nullptr) *owner = nullptr;
    owner = nullptr;
    if (closing) return;
    closing = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&handle), OnClosed);
  }
};

class Poller : public Napi::ObjectWrap<Poller> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Poller",
                       {InstanceMethod("start", &Poller::Start), InstanceMethod("stop", &Poller::Stop),
                        InstanceMethod("ref", &Poller::Ref), InstanceMethod("unref", &Poller::Unref),
                        InstanceMethod("close", &Poller::Close)});
  }

  // new Poller(fd, callback(status, events))
  explicit Poller(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Poller>(info) {
    Napi::Env env = info.Env();
    int fd = IntArgument(info, 0);
    watch_ = new Watch();
    uv_loop_t* loop;
    napi_get_uv_event_loop(env, &loop);
    int result = uv_poll_init(loop, &watch_->handle, fd);
    if (result < 0) {
      delete watch_;
      watch_ = nullptr;
      throw SystemError(env, result, "uv_poll_init");
    }
    watch_->handle.data = watch_;
    watch_->owner = &watch_;
    watch_->callback = Napi::Persistent(info[1].As<Napi::Function>());
    watch_->context = new Napi::AsyncContext(env, "prefork:poll");
    napi_add_async_cleanup_hook(env, Watch::OnCleanup, watch_, &watch_->cleanup);
  }

  ~Poller() override { CloseWatch(); }

 private:
  bool Open() const { return watch_ != nullptr; }

  // start(events): 1 readable, 2 writable, 3 both; may be called again to change the events.
  Napi::Value Start(const Napi::CallbackInfo& info) {
    if (!Open()) throw Napi::Error::New(info.Env(), "prefork native: poller is closed");
    int events = IntArgument(info, 0);
    int uv_events = ((events & 1) ? UV_READABLE : 0) | ((events & 2) ? UV_WRITABLE : 0) | UV_DISCONNECT;
    int result = uv_poll_start(&watch_->handle, uv_events, Watch::OnEvent);
    if (result < 0) throw SystemError(info.Env(), result, "uv_poll_start");
    return info.Env().Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    if (Open()) uv_poll_stop(&watch_->handle);
    return info.Env().Undefined();
  }

  Napi::Value Ref(const Napi::CallbackInfo& info) {
    if (Open()) uv_ref(reinterpret_cast<uv_handle_t*>(&watch_->handle));
    return info.Env().Undefined();
  }

  Napi::Value Unref(const Napi::CallbackInfo& info) {
    if (Open()) uv_unref(reinterpret_cast<uv_handle_t*>(&watch_->handle));
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    CloseWatch();
    return info.Env().Undefined();
  }

  void CloseWatch() {
    if (watch_ != nullptr) watch_->Close();  // also clears watch_
  }

  Watch* watch_ = nullptr;
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("createListenSocket", Napi::Function::New(env, CreateListenSocket));
  exports.Set("spawn", Napi::Function::New(env, Spawn));
  exports.Set("waitPidfd", Napi::Function::New(env, WaitPidfd));
  exports.Set("waitInThread", Napi::Function::New(env, WaitInThread));
  exports.Set("socketPair", Napi::Function::New(env, SocketPair));
  exports.Set("userGroups", Napi::Function::New(env, UserGroups));
  exports.Set("channelSend", Napi::Function::New(env, ChannelSend));
  exports.Set("channelRecv", Napi::Function::New(env, ChannelRecv));
  exports.Set("setCloexec", Napi::Function::New(env, SetCloexec));
  exports.Set("dupCloexec", Napi::Function::New(env, DupCloexec));
  exports.Set("peerPid", Napi::Function::New(env, PeerPid));
  exports.Set("startOrphanWatchdog", Napi::Function::New(env, StartOrphanWatchdog));
  exports.Set("createSharedRegion", Napi::Function::New(env, CreateSharedRegion));
  exports.Set("mapSharedRegion", Napi::Function::New(env, MapSharedRegion));
  exports.Set("inspectSocket", Napi::Function::New(env, InspectSocket));
  exports.Set("listenQueue", Napi::Function::New(env, ListenQueue));
  exports.Set("startListening", Napi::Function::New(env, StartListening));
  exports.Set("attachReuseportProgram", Napi::Function::New(env, AttachReuseportProgram));
  exports.Set("detachReuseportProgram", Napi::Function::New(env, DetachReuseportProgram));
  exports.Set("notify", Napi::Function::New(env, Notify));
  exports.Set("reapExited", Napi::Function::New(env, ReapExited));
  exports.Set("Poller", Poller::Define(env));
  exports.Set("buildSystem", Napi::String::New(env, PREFORK_BUILD_SYSTEM));
  return exports;
}

}  // namespace

NODE_API_MODULE(prefork, Init)
