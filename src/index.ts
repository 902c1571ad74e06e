// prefork's public API: the supervisor and worker side, and the low-level layer they are built on.
export { createListenSocket, DEFAULT_BACKLOG } from './socket';
export type { ListenSocket, ListenSocketOptions } from './socket';
export { spawn, kill, ChildHandle } from './spawn';
export type { SpawnOptions, ExitInfo } from './spawn';
export { ControlChannel, createChannelPair, MAX_FDS_PER_MESSAGE } from './channel';

// The supervisor (primary) and the worker side.
export { supervise, Supervisor } from './supervisor';
export type { Worker, WorkerState, WorkerStats, SupervisorStats } from './supervisor';
export type { SupervisorOptions, RestartOptions, ListenAddress } from './options';
export { listen, currentSupervisor } from './listen';
export { isWorker, isPrimary, workerId, generation, ready, onShutdown } from './worker';

// Shared state across workers.
export { CounterStore, DEFAULT_STORE_CAPACITY, MAX_KEY_LENGTH } from './store';
export type { CounterStoreOptions, CounterValue } from './store';
export { RateLimitStore, FastifyRateLimitStore } from './rate-limit';
