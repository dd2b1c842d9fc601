import { EsError } from '@es/protocol';

/** Codes carried by {@link MockEngineError}. */
export type MockEngineErrorCode = 'invalid_option' | 'invalid_script' | 'not_listening';

/**
 * The one error class of `@es/mock-engine`: invalid options, an unreadable or malformed
 * `--script` file, or asking for the URL of an engine that is not listening.
 */
export class MockEngineError extends EsError<MockEngineErrorCode> {
  override readonly name = 'MockEngineError';
}
