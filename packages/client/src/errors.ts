import { EsError } from '@es/protocol';

/** Why a client call failed. */
export type ClientErrorCode =
  | 'unreachable'
  | 'timeout'
  | 'unauthorized'
  | 'not_found'
  | 'http_error'
  | 'bad_input'
  /** The answer to an admin request was not signed with the admin key: not the scheduler. */
  | 'unverified';

/** Structured fields of a {@link ClientError}. */
export interface ClientErrorOptions {
  /** HTTP status, when the scheduler answered. */
  status?: number;
  /** The API's own error code (`unknown_worker`, `bad_request` ...). */
  apiCode?: string;
  cause?: unknown;
}

/** Every failure of `@es/client`; `message` says what to do. */
export class ClientError extends EsError<ClientErrorCode> {
  override readonly name = 'ClientError';
  readonly apiCode: string | undefined;

  constructor(code: ClientErrorCode, message: string, options: ClientErrorOptions = {}) {
    super(code, message, options);
    this.apiCode = options.apiCode;
  }
}
