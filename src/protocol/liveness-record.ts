// A worker's liveness record: a small shared memory region of its own that its event loop writes and the
// primary reads without asking. One region per worker, so a worker can write only its own record.
//
// One 64-bit word per fact, each changed with one atomic store or add (no value is split over two words):
//   word 0  the loop's last heartbeat: CLOCK_MONOTONIC in ms (process.hrtime, the same clock in every
//           process of the machine), 0 before the first beat
//   word 1  the loop's lag at that beat, in ms: how late the heartbeat timer fired
//   word 2  what the worker has served: requests of http/https/http2 servers, connections of plain net.Servers
//   word 3  its open connections at the last heartbeat (Node's own count, read at each beat: nothing per connection)
// The primary trusts none of it beyond the worker's own fate: a wrong value can only get that worker
// recycled or killed early, or spared.

export const LIVENESS_BYTES = 64;
const BEAT = 0;
const LAG = 1;
const SERVED = 2;
const CONNECTIONS = 3;
/** A beat written just after the primary read its clock is a little ahead of it; more than this is no beat. */
const FUTURE_BEAT_SLACK_MS = 1000;

export interface LivenessReading {
  /** Monotonic ms of the last heartbeat; 0: none yet. */
  beatAt: number;
  lag: number;
  served: number;
  /** Open connections at the last heartbeat. */
  connections: number;
}

/** Monotonic milliseconds, comparable between processes on one machine. */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint() / 1_000_000n);
}

export class LivenessRecord {
  private readonly words: BigInt64Array;

  constructor(region: ArrayBuffer) {
    this.words = new BigInt64Array(region, 0, 4);
  }

  /** The worker's heartbeat: written by its event loop, so a stuck loop stops it. */
  beat(now: number, lag: number, openConnections: number): void {
    Atomics.store(this.words, CONNECTIONS, BigInt(openConnections));
    Atomics.store(this.words, LAG, BigInt(lag));
    Atomics.store(this.words, BEAT, BigInt(now));
  }

  /** One more request served (or connection, for a plain net.Server). */
  countServed(): void {
    Atomics.add(this.words, SERVED, 1n);
  }

  /**
   * Why the heartbeat word cannot be one a worker's loop wrote by `now` (monotonic ms), or null. For a worker that has
   * beaten (its first beat comes before it says 'online'): 0 or a negative word is a beat erased, a later one a lie.
   */
  beatProblem(now: number): string | null {
    const beat = Atomics.load(this.words, BEAT);
    if (beat <= 0n || beat > BigInt(Number.MAX_SAFE_INTEGER)) return `a heartbeat word that is no time (${beat})`;
    if (Number(beat) > now + FUTURE_BEAT_SLACK_MS) return `a heartbeat ${Number(beat) - now} ms in the future`;
    return null;
  }

  /** What the worker last wrote, each value clamped to a sane range. */
  read(): LivenessReading {
    const clamp = (word: number) => {
      const value = Number(Atomics.load(this.words, word));
      return value >= 0 && value <= Number.MAX_SAFE_INTEGER ? value : 0;
    };
    return { beatAt: clamp(BEAT), lag: clamp(LAG), served: clamp(SERVED), connections: clamp(CONNECTIONS) };
  }
}
