// prefork's public API: the supervisor and worker side, and the low-level layer they are built on.
export { createListenSocket } from './core/listen-socket';
export type { ListenSocket, ListenSocketOptions } from './core/listen-socket';
export { spawn, kill, ChildHandle } from './core/spawn';
export type { SpawnOptions, ExitInfo } from './core/spawn';
export { ControlChannel, createChannelPair, MAX_FDS_PER_MESSAGE } from './core/channel';
export { DEFAULT_BACKLOG, DEFAULT_STORE_CAPACITY, MAX_KEY_LENGTH } from './limits';

// The supervisor (primary) and the worker side.
export { supervise, Supervisor } from './primary/supervisor';
export type { Worker, WorkerState, WorkerStats, SupervisorStats, SupervisorEvent, SupervisorEvents, SupervisorListener, UpgradeEvent, ExitReason, RecycleLimit } from './primary/supervisor';
export type { SupervisorOptions, ListenAddress } from './primary/options';
export type { RestartOptions } from './primary/restart-policy';
export type { BalanceMode } from './primary/steering';
export { listen, currentSupervisor } from './listen';
export { isWorker, isPrimary, workerId, generation, ready, onShutdown } from './worker';

// Shared state across workers.
export { CounterStore } from './store/counter-store';
export type { CounterStoreOptions, CounterValue } from './store/counter-store';
export { RateLimitStore, FastifyRateLimitStore } from './store/rate-limit';
export { RateLimiterPrefork } from './store/rate-limiter-prefork';
export type { RateLimiterPreforkOptions } from './store/rate-limiter-prefork';
