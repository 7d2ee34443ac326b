import { pino, type Logger as PinoLogger, type DestinationStream } from 'pino';

export type Logger = PinoLogger;

/**
 * JSON lines on stdout. Anything that could carry a credential is redacted by key as a second line of
 * defence; the code never logs tokens, codes, secrets or session keys in the first place.
 */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'wxgate' },
      redact: {
        paths: ['token', 'secret', 'code', 'session_key', 'sessionKey', 'authorization', '*.authorization', '*.secret', '*.token'],
        censor: '[redacted]',
      },
    },
    destination,
  );
}
