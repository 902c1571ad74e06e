// The control channel between primary and worker: JSON messages with optional fds over a Unix socketpair.
import { EventEmitter } from 'node:events';
import { closeSync } from 'node:fs';
import { native, type NativePoller, READABLE, WRITABLE } from './binding';
import { invalidValue, preforkError } from '../errors';
import { MAX_FRAME_BYTES, MAX_INT } from '../limits';
import { checkInteger } from '../validate';

// Frame: u32 body length, u32 fd count, JSON body. The fds ride with the frame's first byte, so they
// reach the reader no later than their frame, in the same read as that byte; a queue pairs them with frames in order.
// Fds no frame announced are the peer breaking the protocol: closed at once, and the channel with them (a peer
// could otherwise fill our fd table).
const HEADER_BYTES = 8;

export const MAX_FDS_PER_MESSAGE = 32;
/** The most fds one read of a channel that takes them all installs (the native read's own cap). */
const MAX_FDS_PER_READ = 64;
const READ_BUFFER_BYTES = 64 * 1024;

interface PendingWrite {
  buffer: Buffer;
  offset: number;
  fds: number[]; // our own dups, sent with the first byte that leaves, then closed
}

/** Creates a connected pair of channel fds (CLOEXEC): keep one, give the other to a child. */
export function createChannelPair(): [number, number] {
  return native.socketPair();
}

/**
 * One end of a control channel. Emits 'message' (message, fds) — the listener owns the received fds
 * and must close them — and 'close' once, when either side closes (EOF tells a worker its primary is gone).
 */
export class ControlChannel extends EventEmitter {
  readonly fd: number;
  private readonly poller: NativePoller;
  private readonly readBuffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);
  /** Bytes read and not yet delivered, as the chunks they arrived in (each byte is copied once, not per read). */
  private chunks: Buffer[] = [];
  private pendingBytes = 0;
  private receivedFds: number[] = [];
  private readonly writes: PendingWrite[] = [];
  private isClosed = false;
  /** The most fds a frame of the peer's may carry: 0 where the peer may send none. */
  private readonly maxFds: number;
  private readonly maxFdsPerRead: number;
  private readonly maxFramesPerSecond: number;
  private readonly maxQueued: { fds: number; bytes: number };
  /** The fds and bytes waiting in `writes`. */
  private queuedFds = 0;
  private queuedBytes = 0;
  private framesThisSecond = 0;
  private secondBegan = 0;

  /**
   * Takes ownership of fd. With `ref: false` the channel does not keep the event loop alive. With `fds: false`
   * the peer may send no fds at all: the kernel drops any it sends (none enters our fd table) and the channel
   * fails as on a malformed frame. With `fds: n`, a frame may carry at most n fds: one read installs no more
   * than that (rounded up to the control buffer's alignment), and a frame with more fails the channel. With
   * `maxFramesPerSecond`, a peer that sends more frames in a second fails it too, and with `maxQueued` one that
   * leaves that many fds or bytes of our messages unread (queued here, the socket buffer full).
   */
  constructor(
    fd: number,
    { ref = true, fds = true, maxFramesPerSecond = Infinity, maxQueued = { fds: Infinity, bytes: Infinity } }: {
      ref?: boolean; fds?: boolean | number; maxFramesPerSecond?: number; maxQueued?: { fds: number; bytes: number };
    } = {},
  ) {
    super();
    this.fd = checkInteger('fd', fd, 0, MAX_INT);
    this.maxFds = fds === true ? MAX_FDS_PER_MESSAGE : fds === false ? 0 : checkInteger('fds', fds, 0, MAX_FDS_PER_MESSAGE);
    this.maxFdsPerRead = fds === true ? MAX_FDS_PER_READ : this.maxFds;
    this.maxFramesPerSecond = maxFramesPerSecond;
    this.maxQueued = maxQueued;
    this.poller = new native.Poller(fd, (status) => this.onEvent(status));
    if (!ref) this.poller.unref();
    this.poller.start(READABLE);
  }

  /** Keep the event loop alive while this channel is open (the default), or not. */
  ref(): void {
    if (!this.isClosed) this.poller.ref();
  }

  unref(): void {
    if (!this.isClosed) this.poller.unref();
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Queues a JSON-serialisable message, and fds for the peer to receive (the caller keeps, and may close, its own). */
  send(message: unknown, fds: number[] = []): void {
    if (this.isClosed) throw preforkError('ERR_PREFORK_CHANNEL_CLOSED', 'The control channel is closed');
    if (!Array.isArray(fds) || fds.length > MAX_FDS_PER_MESSAGE) {
      throw invalidValue('fds', `must be an array of at most ${MAX_FDS_PER_MESSAGE} file descriptors`, fds);
    }
    fds.forEach((fd, i) => checkInteger(`fds[${i}]`, fd, 0, MAX_INT));
    const body = Buffer.from(JSON.stringify(message) ?? 'null');
    if (body.length > MAX_FRAME_BYTES) {
      throw invalidValue('message', `must serialise to at most ${MAX_FRAME_BYTES} bytes of JSON`, `${body.length} bytes`);
    }
    const frame = Buffer.allocUnsafe(HEADER_BYTES + body.length);
    frame.writeUInt32BE(body.length, 0);
    frame.writeUInt32BE(fds.length, 4);
    body.copy(frame, HEADER_BYTES);
    if (this.queuedFds + fds.length > this.maxQueued.fds || this.queuedBytes + frame.length > this.maxQueued.bytes) {
      this.failProtocol(`${this.writes.length} messages unread (${this.queuedFds} fds, ${this.queuedBytes} bytes)`, 'left');
      return;
    }
    // Dups, so the caller may close its fds while the message waits in the queue.
    this.writes.push({ buffer: frame, offset: 0, fds: fds.map((fd) => native.dupCloexec(fd)) });
    this.queuedFds += fds.length;
    this.queuedBytes += frame.length;
    if (this.writes.length === 1) this.flush();
  }

  /** Resolves when every queued message has left (or the channel closed): a process about to exit waits for it. */
  flushed(): Promise<void> {
    if (this.isClosed || this.writes.length === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.off('flushed', done);
        this.off('close', done);
        resolve();
      };
      this.on('flushed', done);
      this.on('close', done);
    });
  }

  /** Delivers what the peer wrote before it went away (its last messages): the caller is about to close. */
  readRemaining(): void {
    if (!this.isClosed) this.read();
  }

  /** Closes this end; the peer sees EOF. Received fds not yet handed out are closed. */
  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.poller.close();
    closeSync(this.fd);
    for (const fd of this.receivedFds) closeSync(fd);
    this.receivedFds = [];
    for (const write of this.writes.splice(0)) write.fds.forEach((fd) => closeSync(fd));
    this.queuedFds = this.queuedBytes = 0;
    this.emit('close');
  }

  private onEvent(status: number): void {
    if (this.isClosed) return;
    if (status < 0) {
      this.close();
      return;
    }
    if (this.writes.length > 0) this.flush();
    if (!this.isClosed) this.read();
  }

  private flush(): void {
    try {
      while (this.writes.length > 0) {
        const write = this.writes[0];
        const sent = native.channelSend(this.fd, write.buffer, write.offset, write.fds);
        if (sent === 0) break; // socket buffer full: wait until writable
        write.fds.forEach((fd) => closeSync(fd));
        this.queuedFds -= write.fds.length;
        write.fds = [];
        write.offset += sent;
        this.queuedBytes -= sent;
        if (write.offset === write.buffer.length) this.writes.shift();
      }
    } catch {
      this.close(); // EPIPE / ECONNRESET: the peer is gone
      return;
    }
    this.poller.start(this.writes.length > 0 ? READABLE | WRITABLE : READABLE);
    if (this.writes.length === 0) this.emit('flushed');
  }

  private read(): void {
    for (;;) {
      let result: [number, number[], boolean] | null;
      try {
        result = native.channelRecv(this.fd, this.readBuffer, this.maxFdsPerRead);
      } catch {
        result = [0, [], false]; // ECONNRESET: treat as the peer closing
      }
      if (result === null) return;
      const [bytes, fds, truncated] = result;
      this.receivedFds.push(...fds);
      if (truncated) {
        // More fds than any frame may carry, or any at all where none may come.
        this.failProtocol(this.maxFds > 0 ? `more than ${this.maxFds} fds in one frame` : 'fds where the protocol has none');
        return;
      }
      if (bytes === 0) {
        this.close();
        return;
      }
      this.chunks.push(Buffer.from(this.readBuffer.subarray(0, bytes)));
      this.pendingBytes += bytes;
      this.deliverFrames();
      if (this.isClosed) return;
      // What is left can only be the fds of the frame whose first bytes this read brought and that is still
      // incomplete: up to its announced count (or the most a frame may carry while its header is incomplete).
      if (this.receivedFds.length > this.fdsPendingFrameMayClaim()) {
        this.failProtocol(`${this.receivedFds.length} fds that no frame announced`);
        return;
      }
    }
  }

  private fdsPendingFrameMayClaim(): number {
    if (this.pendingBytes === 0) return 0;
    if (this.pendingBytes < HEADER_BYTES) return this.maxFds;
    return this.firstBytes(HEADER_BYTES, false).readUInt32BE(4);
  }

  /** The first `length` pending bytes as one buffer, removed from the chunks when `consume`. */
  private firstBytes(length: number, consume: boolean): Buffer {
    if (this.chunks[0].length < length) this.chunks.splice(0, this.chunks.length, Buffer.concat(this.chunks)); // at most one frame
    const bytes = this.chunks[0].subarray(0, length);
    if (consume) {
      this.pendingBytes -= length;
      if (this.chunks[0].length === length) this.chunks.shift();
      else this.chunks[0] = this.chunks[0].subarray(length);
    }
    return bytes;
  }

  private deliverFrames(): void {
    while (this.pendingBytes >= HEADER_BYTES) {
      const header = this.firstBytes(HEADER_BYTES, false);
      const bodyLength = header.readUInt32BE(0);
      const fdCount = header.readUInt32BE(4);
      if (bodyLength > MAX_FRAME_BYTES || fdCount > this.maxFds || fdCount > this.receivedFds.length) {
        this.failProtocol('a malformed frame');
        return;
      }
      if (this.pendingBytes < HEADER_BYTES + bodyLength) return;
      if (++this.framesThisSecond > this.maxFramesPerSecond) {
        const now = Date.now();
        if (now - this.secondBegan < 1000) {
          this.failProtocol(`more than ${this.maxFramesPerSecond} frames in a second`);
          return;
        }
        this.secondBegan = now;
        this.framesThisSecond = 1;
      }
      const frame = this.firstBytes(HEADER_BYTES + bodyLength, true);
      let message: unknown;
      try {
        message = JSON.parse(frame.subarray(HEADER_BYTES).toString());
      } catch {
        this.failProtocol('a malformed frame');
        return;
      }
      const fds = this.receivedFds.splice(0, fdCount);
      this.emit('message', message, fds);
      if (this.isClosed) return;
    }
  }

  /**
   * Closes every fd received and not handed out, says why, then closes the channel: an 'error' listener acts
   * before the peer sees EOF (the primary kills a worker first, so it cannot take the EOF for a drain).
   */
  private failProtocol(problem: string, verb = 'sent'): void {
    for (const fd of this.receivedFds.splice(0)) closeSync(fd);
    try {
      this.emit('error', preforkError('ERR_PREFORK_CHANNEL_PROTOCOL', `Control channel peer ${verb} ${problem}: closed the channel`));
    } finally {
      this.close();
    }
  }
}
