/** Model discovery on an OpenAI-compatible endpoint. */
import type OpenAI from 'openai';
import { ResearchError } from './errors.js';
import { messageOf } from './util.js';

/** A model as `/v1/models` lists it. */
export interface ListedModel {
  /** The name requests are sent with. */
  id: string;
  /** What it serves (vLLM and the scheduler: the model path or hub id), when listed. */
  root: string | undefined;
}

/**
 * The first model `/v1/models` lists: the scheduler's default deployment. Throws
 * `engine_failed` naming `--scheduler-url` or `--model` as the fix.
 */
export async function firstModel(client: OpenAI): Promise<ListedModel> {
  let first: ListedModel | undefined;
  try {
    const entry = (await client.models.list()).data[0] as
      { id: string; root?: unknown } | undefined;
    if (entry !== undefined) {
      first = {
        id: entry.id,
        root: typeof entry.root === 'string' && entry.root !== '' ? entry.root : undefined,
      };
    }
  } catch (error) {
    throw new ResearchError(
      'engine_failed',
      `cannot list models at ${client.baseURL}/models (${messageOf(error)}): is the scheduler ` +
        `running? Check --scheduler-url, or pass --model`,
      { param: 'scheduler-url', cause: error },
    );
  }
  if (first === undefined) {
    throw new ResearchError(
      'engine_failed',
      `${client.baseURL}/models lists no models yet (no worker is ready): wait, or pass --model`,
      { param: 'model' },
    );
  }
  return first;
}
