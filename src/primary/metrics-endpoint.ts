// The primary's own HTTP endpoint for Prometheus: served by the primary, never routed through a worker.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { formatAddress } from '../protocol/address';
import type { MetricsConfig } from './options';

export class MetricsEndpoint {
  private readonly server: http.Server;

  constructor(
    private readonly config: MetricsConfig,
    render: () => Promise<string>,
  ) {
    this.server = http.createServer((request, response) => {
      const path = (request.url ?? '/').split('?')[0];
      if (path !== config.path || (request.method !== 'GET' && request.method !== 'HEAD')) {
        response.writeHead(404, { 'content-type': 'text/plain' }).end(`Not found: metrics are at ${config.path}\n`);
        return;
      }
      render().then(
        (text) => response.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }).end(text),
        (error: Error) => response.writeHead(500, { 'content-type': 'text/plain' }).end(`${error.message}\n`),
      );
    });
  }

  /** Listens; a refused address (EADDRINUSE, EACCES) rejects with an error that says it is the metrics endpoint. */
  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', (error: NodeJS.ErrnoException) => {
        error.message = `The metrics endpoint cannot listen on ${this.config.label}: ${error.message}`;
        reject(error);
      });
      this.server.listen({ host: this.config.host, port: this.config.port }, () => resolve());
    });
  }

  /** Where it listens (port 0 settled), or null before it does. */
  get address(): { host: string; port: number; url: string } | null {
    const address = this.server.address() as AddressInfo | null;
    if (!address) return null;
    return { host: address.address, port: address.port, url: `http://${formatAddress(address.address, address.port)}${this.config.path}` };
  }

  close(): void {
    this.server.close();
    this.server.closeAllConnections();
  }
}
