// Classic BPF programs for a reuseport group (SO_ATTACH_REUSEPORT_CBPF). The kernel runs the group's program on
// each SYN; its return value is the index of the socket that gets the connection, in the group's own order.
// An index out of range falls back to the kernel's hash.

/** A program as the native core takes it: [code, jt, jf, k] per instruction. */
export type Program = Uint32Array;

/** Returned when the program has no opinion: out of range, so the kernel hashes. */
export const KERNEL_HASH = 0xffffffff;

// Opcodes (linux/filter.h, linux/bpf_common.h).
const LD_W_ABS = 0x20;
const LD_B_ABS = 0x30;
const LD_MEM = 0x60;
const ST = 0x02;
const TAX = 0x07;
const ALU_K = 0x04;
const ALU_X = 0x0c;
const MUL = 0x20;
const RSH = 0x70;
const MOD = 0x90;
const XOR = 0xa0;
const JA = 0x05;
const JEQ_K = 0x15;
const JGE_K = 0x35;
const RET_K = 0x06;

const SKF_AD_RANDOM = (-0x1000 + 56) >>> 0; // `ld rand`: a random 32-bit number
const SKF_NET_OFF = -0x100000; // loads relative to the IP header
const net = (offset: number): number => (SKF_NET_OFF + offset) >>> 0;
const GOLDEN = 0x9e3779b1; // Knuth's multiplicative hash constant (2^32 / φ)

type Instruction = [code: number, jt: number, jf: number, k: number];

function encode(instructions: Instruction[]): Program {
  return Uint32Array.from(instructions.flat());
}

/** Returns a constant: `KERNEL_HASH` lets the kernel hash as if no program were attached. */
export function constantProgram(index: number): Program {
  return encode([[RET_K, 0, 0, index >>> 0]]);
}

/**
 * New connections spread at random over the sockets with weights: socket `index` gets weight/total of them.
 * No weight at all: the kernel hashes.
 */
export function weightedProgram(entries: Array<{ index: number; weight: number }>): Program {
  const chosen = entries.filter((entry) => entry.weight > 0);
  if (chosen.length === 0) return constantProgram(KERNEL_HASH);
  if (chosen.length === 1) return constantProgram(chosen[0].index);
  const total = chosen.reduce((sum, entry) => sum + entry.weight, 0);
  const program: Instruction[] = [[LD_W_ABS, 0, 0, SKF_AD_RANDOM], [ALU_K | MOD, 0, 0, total]];
  let bound = 0;
  for (const [position, entry] of chosen.entries()) {
    bound += entry.weight;
    // A < bound: this socket (fall through to its ret); else skip the ret to the next test.
    if (position < chosen.length - 1) program.push([JGE_K, 1, 0, bound]);
    program.push([RET_K, 0, 0, entry.index]);
  }
  return encode(program);
}

/**
 * The same client address always reaches the same slot: its home, `hash(address) % slotCount`. A client whose
 * home slot is out of service goes to one of the serving slots by a second hash, so when a slot stops, only its
 * own clients move. `serving` maps slot number → socket index, for the slots in service.
 */
export function clientAddressProgram(slotCount: number, serving: Map<number, number>): Program {
  if (serving.size === 0) return constantProgram(KERNEL_HASH);
  const program: Instruction[] = [
    /* 0 */ [LD_B_ABS, 0, 0, net(0)], // IP version (high nibble) and header length
    /* 1 */ [ALU_K | RSH, 0, 0, 4],
    /* 2 */ [JEQ_K, 2, 0, 6], // IPv6: to 5
    /* 3 */ [LD_W_ABS, 0, 0, net(12)], // IPv4 source address
    /* 4 */ [JA, 0, 0, 10], // to 15
    // IPv6 source address (bytes 8 to 23): its four words folded by XOR
    /* 5 */ [LD_W_ABS, 0, 0, net(8)],
    /* 6 */ [TAX, 0, 0, 0],
    /* 7 */ [LD_W_ABS, 0, 0, net(12)],
    /* 8 */ [ALU_X | XOR, 0, 0, 0],
    /* 9 */ [TAX, 0, 0, 0],
    /* 10 */ [LD_W_ABS, 0, 0, net(16)],
    /* 11 */ [ALU_X | XOR, 0, 0, 0],
    /* 12 */ [TAX, 0, 0, 0],
    /* 13 */ [LD_W_ABS, 0, 0, net(20)],
    /* 14 */ [ALU_X | XOR, 0, 0, 0],
  ];
  program.push(
    [ALU_K | MUL, 0, 0, GOLDEN],
    [ALU_K | RSH, 0, 0, 8], // the multiply's high bits are the well-mixed ones
    [ST, 0, 0, 0], // M[0] = hash, for the second choice
    [ALU_K | MOD, 0, 0, slotCount],
  );
  for (const [slot, index] of serving) program.push([JEQ_K, 0, 1, slot], [RET_K, 0, 0, index]);
  // The home slot is out of service: a serving slot chosen by other bits of the same hash.
  const fallback = [...serving.values()];
  program.push([LD_MEM, 0, 0, 0], [ALU_K | RSH, 0, 0, 12], [ALU_K | MOD, 0, 0, fallback.length]);
  for (const [position, index] of fallback.entries()) {
    if (position < fallback.length - 1) program.push([JEQ_K, 0, 1, position]);
    program.push([RET_K, 0, 0, index]);
  }
  return encode(program);
}

/** The home slot of an IPv4 or IPv6 address under clientAddressProgram (for tests and the docs' promise). */
export function homeSlot(address: string, slotCount: number): number {
  let word: number;
  if (address.includes(':')) {
    const words = ipv6Words(address);
    word = (words[0] ^ words[1] ^ words[2] ^ words[3]) >>> 0;
  } else {
    word = address.split('.').reduce((sum, part) => ((sum << 8) | Number(part)) >>> 0, 0);
  }
  return ((Math.imul(word, GOLDEN) >>> 0) >>> 8) % slotCount;
}

function ipv6Words(address: string): number[] {
  const [head, tail = ''] = address.split('::');
  const parts = (text: string): number[] => (text ? text.split(':').map((part) => parseInt(part, 16)) : []);
  const left = parts(head);
  const right = address.includes('::') ? parts(tail) : [];
  const groups = [...left, ...new Array(8 - left.length - right.length).fill(0), ...right];
  return [0, 1, 2, 3].map((i) => ((groups[2 * i] << 16) | groups[2 * i + 1]) >>> 0);
}
