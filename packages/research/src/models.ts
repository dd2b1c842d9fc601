/** Model discovery on an OpenAI-compatible endpoint. */
import type OpenAI from 'openai';
import { ResearchError } from './errors.js';
import { messageOf } from './util.js';

/**
 * The first model `/v1/models` lists: the scheduler's default deployment. Throws
 * `ENGINE_FAILED` naming `--scheduler-url` or `--model` as the fix.
 */
export async function firstModelId(client: OpenAI): Promise<string> {
  let first: string | undefined;
  try {
    first = (await client.models.list()).data[0]?.id;
  } catch (error) {
    throw new ResearchError(
      'ENGINE_FAILED',
      `cannot list models at ${client.baseURL}/models (${messageOf(error)}): is the scheduler ` +
        `running? Check --scheduler-url, or pass --model`,
      { field: '--scheduler-url', cause: error },
    );
  }
  if (first === undefined) {
    throw new ResearchError(
      'ENGINE_FAILED',
      `${client.baseURL}/models lists no models yet (no worker is ready): wait, or pass --model`,
      { field: '--model' },
    );
  }
  return first;
}
