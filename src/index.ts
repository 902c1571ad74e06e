// prefork's public API. The low-level layer: listen sockets, native spawn with reaping, control channels.
export { createListenSocket, DEFAULT_BACKLOG } from './socket';
export type { ListenSocket, ListenSocketOptions } from './socket';
export { spawn, kill, ChildHandle } from './spawn';
export type { SpawnOptions, ExitInfo } from './spawn';
export { ControlChannel, createChannelPair, MAX_FDS_PER_MESSAGE } from './channel';
