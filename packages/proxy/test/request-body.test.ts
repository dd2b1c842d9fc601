import { describe, expect, it } from 'vitest';
import { withMembers } from '../src/request-body.js';

const rewritten = { stream: true, stream_options: { include_usage: true }, model: 'served' };

describe('withMembers', () => {
  it.each([
    ['no member to replace', '{"model":"alias","messages":[{"role":"user","content":"hi"}]}'],
    [
      'members to replace, among others, with whitespace',
      ' {\n "stream" : false , "messages":[{"content":"a \\" } ] , still"}],"model":"x",\n"n":1 }\n',
    ],
    ['a replaced member last', '{"n":null,"stream":false}'],
    ['a replaced member first', '{"stream":{"nested":[1,{"stream":2}]},"top_p":0.5}'],
    ['strings ending in backslashes', '{"a":"\\\\","b":"x\\\\\\"y","model":"m"}'],
    ['duplicate names (the last one counts in JSON.parse)', '{"model":"a","model":"b","x":[]}'],
    ['an empty object', '{}'],
    ['numbers, true, false, null before the end', '{"a":1.5e3,"b":true,"c":false,"d":null}'],
  ])('%s: gives what serialising the parsed fields gives', (_name, text) => {
    const raw = Buffer.from(text);
    const fields = JSON.parse(text) as Record<string, unknown>;
    const out = withMembers(raw, fields, rewritten);
    expect(JSON.parse(out.toString())).toEqual({ ...fields, ...rewritten });
  });

  it('keeps the client bytes of the members it does not replace', () => {
    const text = '{"temperature":0.10, "messages":[ {"content":"é\\u00e9"} ],"stream":false}';
    const out = withMembers(Buffer.from(text), JSON.parse(text) as Record<string, unknown>, {
      stream: true,
    });
    expect(out.toString()).toBe(
      '{"temperature":0.10,"messages":[ {"content":"é\\u00e9"} ],"stream":true}',
    );
  });

  it('only removes a member given as undefined', () => {
    const text = '{"model":"m","user":"u"}';
    const out = withMembers(Buffer.from(text), JSON.parse(text) as Record<string, unknown>, {
      user: undefined,
    });
    expect(out.toString()).toBe('{"model":"m"}');
  });
});
