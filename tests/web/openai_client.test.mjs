// The unmodified `openai` npm package against `blip2 serve`: a client written
// for OpenAI's API must work with ours by changing only baseURL and apiKey.
// run.sh starts the server and passes BLIP2_URL, BLIP2_API_KEY and
// BLIP2_SOURCE_DIR.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import OpenAI from 'openai';

import { serverFromEnv } from './env.mjs';

const { url, apiKey, sourceDir } = serverFromEnv();
const client = new OpenAI({ baseURL: `${url}/v1`, apiKey, maxRetries: 0, timeout: 120_000 });
const image = `data:image/png;base64,${readFileSync(join(sourceDir, 'examples/shapes-1.png')).toString('base64')}`;

function question(text) {
  return [{
    role: 'user',
    content: [
      { type: 'image_url', image_url: { url: image } },
      { type: 'text', text },
    ],
  }];
}

test('models.list names the served model', async () => {
  const ids = [];
  for await (const model of client.models.list()) ids.push(model.id);
  assert.ok(ids.length >= 1, 'expected at least one model');
  for (const id of ids) assert.ok(typeof id === 'string' && id.length > 0, `bad model id ${JSON.stringify(id)}`);
});

test('chat.completions.create answers the same with and without streaming', async () => {
  const models = await client.models.list();
  const model = models.data[0].id;
  const request = { model, messages: question('what color is the star?'), max_tokens: 20, temperature: 0 };

  const whole = await client.chat.completions.create(request);
  assert.equal(whole.object, 'chat.completion');
  assert.equal(whole.choices.length, 1);
  assert.equal(whole.choices[0].message.role, 'assistant');
  const answer = whole.choices[0].message.content;
  assert.ok(typeof answer === 'string' && answer.trim().length > 0, `empty answer: ${JSON.stringify(answer)}`);
  assert.ok(['stop', 'length'].includes(whole.choices[0].finish_reason));
  assert.ok(whole.usage.completion_tokens > 0);
  assert.equal(whole.usage.total_tokens, whole.usage.prompt_tokens + whole.usage.completion_tokens);

  const stream = await client.chat.completions.create({ ...request, stream: true });
  let streamed = '';
  let chunks = 0;
  let finish = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    const choice = chunk.choices[0];
    if (!choice) continue;
    if (choice.delta.content) {
      streamed += choice.delta.content;
      chunks += 1;
    }
    if (choice.finish_reason) finish = choice.finish_reason;
  }
  assert.ok(chunks >= 1, 'the stream carried no text');
  assert.equal(streamed, answer, 'streamed and non-streamed answers differ');
  assert.equal(finish, whole.choices[0].finish_reason);
});

test('an image without a question streams its caption token by token', async () => {
  const models = await client.models.list();
  const request = {
    model: models.data[0].id,
    messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: image } }] }],
    max_tokens: 30,
    temperature: 0,  // greedy streams token by token; beam search (the default) only knows its text at the end
  };
  const whole = await client.chat.completions.create(request);
  const caption = whole.choices[0].message.content;
  assert.ok(caption.trim().split(/\s+/).length >= 2, `expected a caption of several words, got ${JSON.stringify(caption)}`);
  const pieces = [];
  for await (const chunk of await client.chat.completions.create({ ...request, stream: true })) {
    const text = chunk.choices[0] && chunk.choices[0].delta.content;
    if (text) pieces.push(text);
  }
  assert.ok(pieces.length >= 2, `the caption came in ${pieces.length} piece(s), not streamed`);
  assert.equal(pieces.join(''), caption);
});

test('a wrong API key is refused with the client\'s AuthenticationError',
  { skip: !apiKey && 'the server has no API key' }, async () => {
  const wrong = new OpenAI({ baseURL: `${url}/v1`, apiKey: `${apiKey}-wrong`, maxRetries: 0 });
  await assert.rejects(() => wrong.models.list(), (err) => {
    assert.ok(err instanceof OpenAI.AuthenticationError, `expected AuthenticationError, got ${err}`);
    assert.equal(err.status, 401);
    return true;
  });
});

test('a remote image URL is refused with the client\'s BadRequestError', async () => {
  const models = await client.models.list();
  await assert.rejects(() => client.chat.completions.create({
    model: models.data[0].id,
    messages: [{
      role: 'user',
      content: [
        { type: 'image_url', image_url: { url: 'https://example.com/cat.png' } },
        { type: 'text', text: 'what is this?' },
      ],
    }],
  }), (err) => {
    assert.ok(err instanceof OpenAI.BadRequestError, `expected BadRequestError, got ${err}`);
    assert.equal(err.status, 400);
    assert.ok(err.message.length > 0);
    return true;
  });
});
