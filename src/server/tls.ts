import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';

/** The main listener's certificate and key (server.tls), as PEM. */
export interface TlsFiles {
  cert: Buffer;
  key: Buffer;
}

/**
 * Reads server.tls's PEM files and checks that they load together (the key is the certificate's), so a
 * bad pair is refused at start or at a reload before anything serves it. Errors name the key and file;
 * never the key's content.
 */
export function loadTlsFiles(tls: { cert: string; key: string }): TlsFiles {
  const read = (which: 'cert' | 'key') => {
    try {
      return readFileSync(tls[which]);
    } catch (err) {
      throw new Error(`server.tls.${which}: cannot read ${tls[which]}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  };
  const files = { cert: read('cert'), key: read('key') };
  try {
    createSecureContext(files);
  } catch (err) {
    throw new Error(`server.tls: ${tls.cert} and ${tls.key} are not a certificate (PEM) and its private key: ${(err as Error).message}`);
  }
  return files;
}
