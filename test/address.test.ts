// Listen addresses, the one module both sides use: parsing, matching a listen() call, and printing.
import { addressMatches, configuredAddress, formatAddress, parseListenAddress } from '../src/protocol/address';

test('printed as host:port, IPv6 hosts in brackets, ":port" when no host was named', () => {
  expect(formatAddress('127.0.0.1', 3000)).toBe('127.0.0.1:3000');
  expect(formatAddress('::1', 3000)).toBe('[::1]:3000');
  expect(formatAddress('localhost', 80)).toBe('localhost:80');
  expect(formatAddress(undefined, 8080)).toBe(':8080');
  expect(formatAddress(null, 8080)).toBe(':8080');
});

test('parsed from a port, "host:port", "[ipv6]:port" or an object, with the label as the user wrote it', () => {
  expect(parseListenAddress(3000)).toEqual({ host: undefined, port: 3000, ipv6Only: false, backlog: 511, label: '3000' });
  expect(parseListenAddress('[::1]:0')).toMatchObject({ host: '::1', port: 0, label: '[::1]:0' });
  expect(parseListenAddress({ host: '::1', port: 9, ipv6Only: true, backlog: 7 })).toEqual({ host: '::1', port: 9, ipv6Only: true, backlog: 7, label: '[::1]:9' });
  expect(() => parseListenAddress('nope')).toThrow('The "listen" option must be a port, "host:port" or "[ipv6]:port". Received \'nope\'');
});

test("a listen() call matches an opened address by the port asked for or bound, and by the host named or bound", () => {
  const opened = { host: '127.0.0.1', port: 41000, configuredHost: 'localhost', configuredPort: 0, zeroPortCall: 0 };
  expect(addressMatches(opened, undefined, 0)).toBe(true);
  expect(addressMatches(opened, undefined, 0, 1)).toBe(false);
  expect(addressMatches(opened, 'localhost', 41000)).toBe(true);
  expect(addressMatches(opened, '127.0.0.1', 0)).toBe(true);
  expect(addressMatches(opened, '::1', 0)).toBe(false);
  expect(addressMatches(opened, undefined, 41001)).toBe(false);
});

test("listen(0) asks for a new port each time: a worker's n-th listen(0) on a host means the n-th such address", () => {
  const second = { host: '127.0.0.1', port: 41001, configuredHost: '127.0.0.1', configuredPort: 0, zeroPortCall: 1 };
  expect(addressMatches(second, '127.0.0.1', 0, 1)).toBe(true);
  expect(addressMatches(second, '127.0.0.1', 0, 0)).toBe(false);
  expect(addressMatches(second, undefined, 41001)).toBe(true); // by its bound port, as any address
});

test('an address only configured matches by what was configured', () => {
  const configured = configuredAddress(parseListenAddress('127.0.0.1:3000'));
  expect(addressMatches(configured, undefined, 3000)).toBe(true);
  expect(addressMatches(configured, '127.0.0.1', 3000)).toBe(true);
  expect(addressMatches(configured, '0.0.0.0', 3000)).toBe(false);
});
