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
const LDX_IMM = 0x01;
const ST = 0x02;
const TAX = 0x07;
const TXA = 0x87;
const ALU_K = 0x04;
const ALU_X = 0x0c;
const MUL = 0x20;
const AND = 0x50;
const LSH = 0x60;
const RSH = 0x70;
const MOD = 0x90;
const XOR = 0xa0;
const JA = 0x05;
const JEQ_K = 0x15;
const JGE_K = 0x35;
const RET_K = 0x06;
const RET_A = 0x16;

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
 *
 * Both choices are table lookups (slot → socket index, and position → serving socket's index), one instruction per
 * entry (see lookup()), so the program has about slotCount + serving.size + 40 instructions: 2,100 for 1,024
 * slots, well within the kernel's 4,096 (BPF_MAXINSNS, else EINVAL). As the kernel stores it, 17 KB, it also
 * fits the 20 KB net.core.optmem_max of kernels before 6.9 (a larger program fails there with ENOMEM).
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
  for (const index of serving.values()) if (index >= NONE) throw new RangeError(`socket index ${index} is beyond a program's table (${NONE - 1} at most)`);
  const home = Array.from({ length: slotCount }, (_, slot) => serving.get(slot) ?? NONE);
  program.push(...lookup(home));
  if (!home.includes(NONE)) return encode([...program, [RET_A, 0, 0, 0]]);
  program.push([JEQ_K, 1, 0, NONE], [RET_A, 0, 0, 0]);
  // The home slot is out of service: a serving slot chosen by other bits of the same hash.
  const fallback = [...serving.values()];
  program.push([LD_MEM, 0, 0, 0], [ALU_K | RSH, 0, 0, 12], [ALU_K | MOD, 0, 0, fallback.length], ...lookup(fallback), [RET_A, 0, 0, 0]);
  return encode(program);
}

/** A table entry that names no socket (socket indices stay far below it: a group has at most two sockets a slot). */
const NONE = 0xffff;

/**
 * A = table[A], for 0 <= A < table.length, each entry 0 to NONE. Two entries share one instruction's constant, so
 * the table costs one instruction per entry where a compare and a return per entry would cost two: for each pair,
 * `A == pair? X = both entries`, then the half A's parity names is shifted out of X. Uses M[1], M[2] and X.
 */
function lookup(table: number[]): Instruction[] {
  const code: Instruction[] = [[ST, 0, 0, 1], [ALU_K | RSH, 0, 0, 1]]; // M[1] = the entry; A = its pair
  for (let pair = 0; 2 * pair < table.length; pair++) {
    const [low, high = NONE] = table.slice(2 * pair, 2 * pair + 2);
    code.push([JEQ_K, 0, 1, pair], [LDX_IMM, 0, 0, (low | (high << 16)) >>> 0]);
  }
  code.push(
    [TXA, 0, 0, 0],
    [ST, 0, 0, 2], // M[2] = the pair's two entries
    [LD_MEM, 0, 0, 1],
    [ALU_K | AND, 0, 0, 1],
    [ALU_K | LSH, 0, 0, 4], // 16 for the odd entry: the high half
    [TAX, 0, 0, 0],
    [LD_MEM, 0, 0, 2],
    [ALU_X | RSH, 0, 0, 0],
    [ALU_K | AND, 0, 0, NONE],
  );
  return code;
}

/** The home slot of an IPv4 or IPv6 address under clientAddressProgram (for tests and the docs' promise). */
export function homeSlot(address: string, slotCount: number): number {
  return addressHash(address) % slotCount;
}

/** The socket index clientAddressProgram picks for a connection from `address`: what the kernel does, in JS (for tests). */
export function clientAddressChoice(address: string, slotCount: number, serving: Map<number, number>): number {
  const home = serving.get(homeSlot(address, slotCount));
  if (home !== undefined) return home;
  const fallback = [...serving.values()];
  return fallback[(addressHash(address) >>> 12) % fallback.length];
}

function addressHash(address: string): number {
  let word: number;
  if (address.includes(':')) {
    const words = ipv6Words(address);
    word = (words[0] ^ words[1] ^ words[2] ^ words[3]) >>> 0;
  } else {
    word = address.split('.').reduce((sum, part) => ((sum << 8) | Number(part)) >>> 0, 0);
  }
  return (Math.imul(word, GOLDEN) >>> 0) >>> 8;
}

function ipv6Words(address: string): number[] {
  const [head, tail = ''] = address.split('::');
  const parts = (text: string): number[] => (text ? text.split(':').map((part) => parseInt(part, 16)) : []);
  const left = parts(head);
  const right = address.includes('::') ? parts(tail) : [];
  const groups = [...left, ...new Array(8 - left.length - right.length).fill(0), ...right];
  return [0, 1, 2, 3].map((i) => ((groups[2 * i] << 16) | groups[2 * i + 1]) >>> 0);
}
