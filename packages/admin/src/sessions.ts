import { randomBytes } from 'node:crypto';

/** How long a dashboard session lasts after its login (12 h). */
export const SESSION_TTL_MS = 12 * 60 * 60 * 1000;
/** How long a one-time login token (what `es dashboard` prints) may wait to be used (60 s). */
export const LOGIN_TOKEN_TTL_MS = 60_000;
/** Sessions (and tokens) kept at most; the oldest go first. */
const MAX_ENTRIES = 1_000;

/** Dashboard sessions and one-time login tokens, held in memory only (a restart logs out). */
export interface SessionStore {
  /** A new single-use login token, valid for {@link LOGIN_TOKEN_TTL_MS}. */
  mintLoginToken(): string;
  /** Use a login token up: true once, within its lifetime; false after, or when unknown. */
  redeemLoginToken(token: string): boolean;
  /** A new session id, valid for {@link SESSION_TTL_MS}. */
  startSession(): string;
  /** Whether `id` is a session that has not ended or expired. */
  valid(id: string | undefined): boolean;
  end(id: string | undefined): void;
}

/** Create a {@link SessionStore} on the clock `now`. */
export function createSessionStore(now: () => number): SessionStore {
  const sessions = new Map<string, number>();
  const tokens = new Map<string, number>();
  const add = (map: Map<string, number>, ttlMs: number) => {
    const id = randomBytes(32).toString('base64url');
    map.set(id, now() + ttlMs);
    if (map.size > MAX_ENTRIES) map.delete(map.keys().next().value as string);
    return id;
  };
  const live = (map: Map<string, number>, id: string | undefined) => {
    if (id === undefined) return false;
    const until = map.get(id);
    if (until === undefined) return false;
    if (until > now()) return true;
    map.delete(id);
    return false;
  };
  return {
    mintLoginToken: () => add(tokens, LOGIN_TOKEN_TTL_MS),
    redeemLoginToken(token) {
      const ok = live(tokens, token);
      tokens.delete(token);
      return ok;
    },
    startSession: () => add(sessions, SESSION_TTL_MS),
    valid: (id) => live(sessions, id),
    end(id) {
      if (id !== undefined) sessions.delete(id);
    },
  };
}
