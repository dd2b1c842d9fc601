import { describe, expect, it } from 'vitest';
import { listeningTcpInodes, listeningUnixInodes, processGroupOf } from '../src/socket-owner.js';

describe('reading /proc for the owner of a socket', () => {
  it('finds the listening Unix socket bound to a path (a connected one with the same path is not it)', () => {
    const table = [
      'Num       RefCount Protocol Flags    Type St Inode Path',
      '0000000000000000: 00000002 00000000 00010000 0001 01 4242 /tmp/es-Ab12Cd/engine-0.sock',
      '0000000000000000: 00000003 00000000 00000000 0001 03 4343 /tmp/es-Ab12Cd/engine-0.sock',
      '0000000000000000: 00000002 00000000 00010000 0001 01 4444 /tmp/es-Ab12Cd/engine-1.sock',
      '0000000000000000: 00000002 00000000 00010000 0001 01 4545 /tmp/a path with spaces.sock',
    ].join('\n');
    expect([...listeningUnixInodes(table, '/tmp/es-Ab12Cd/engine-0.sock')]).toEqual(['4242']);
    expect([...listeningUnixInodes(table, '/tmp/a path with spaces.sock')]).toEqual(['4545']);
    expect(listeningUnixInodes(table, '/tmp/none.sock').size).toBe(0);
  });

  it('finds TCP sockets listening on a port, on any address, and not connections to it', () => {
    const table = [
      '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
      '   0: 0100007F:1F41 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 111 1',
      '   1: 00000000:1F41 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 222 1',
      '   2: 0100007F:9C40 0100007F:1F41 01 00000000:00000000 00:00000000 00000000  1000        0 333 1',
      '   3: 0100007F:1F42 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 444 1',
    ].join('\n');
    expect([...listeningTcpInodes(table, 8001)].sort()).toEqual(['111', '222']);
    expect([...listeningTcpInodes(table, 40000)]).toEqual([]);
  });

  it('reads the process group from a stat line whose command holds spaces and parentheses', () => {
    expect(processGroupOf('123 (node (worker) x) S 100 4242 4242 0 -1 4194560')).toBe(4242);
  });
});
