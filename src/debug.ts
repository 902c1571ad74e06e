// NODE_DEBUG=prefork traces (util.debuglog): every socket request and answer, fd received, listen interception,
// readiness and drain step, and restart decision, in the primary and in workers. Silent otherwise.
import { debuglog } from 'node:util';

export const debug = debuglog('prefork');
