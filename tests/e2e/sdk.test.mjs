// End-to-end: the official OpenAI and Anthropic SDKs talk to rigbox-gateway as they would to the
// real APIs. run.sh starts PostgreSQL-backed daemons and the mock provider and passes, in the
// environment: RIGBOX_GATEWAY_URL, RIGBOX_WS_TOKEN (a workspace's rbw_ token), MOCK_URL,
// OPERATOR_OPENAI_KEY, OPERATOR_ANTHROPIC_KEY, PSQL_ARGS (JSON array), WORKSPACE_ID.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';

const gw = process.env.RIGBOX_GATEWAY_URL;
const token = process.env.RIGBOX_WS_TOKEN;
const openai = new OpenAI({ baseURL: `${gw}/v1`, apiKey: token, maxRetries: 0 });
const anthropic = new Anthropic({ baseURL: gw, apiKey: token, maxRetries: 0 });
const messages = [{ role: 'user', content: 'Say hello to the end-to-end test.' }];

async function lastUpstreamRequest() {
  const res = await fetch(`${process.env.MOCK_URL}/mock/requests`);
  const body = await res.json();
  const items = body.requests ?? body.items ?? body;
  return items[items.length - 1];
}

function header(req, name) {
  const h = req.headers;
  if (Array.isArray(h)) {
    const e = h.find((x) => (x.name ?? x[0]).toLowerCase() === name);
    return e ? (e.value ?? e[1]) : undefined;
  }
  const k = Object.keys(h).find((x) => x.toLowerCase() === name);
  return k ? h[k] : undefined;
}

function sql(query) {
  const args = JSON.parse(process.env.PSQL_ARGS);
  return execFileSync('psql', [...args, '-qAt', '-c', query], { encoding: 'utf8' }).trim();
}

async function usageRow(requestId) {
  // The recorder writes in batches: wait for the row.
  for (let i = 0; i < 50; i++) {
    const row = sql(`SELECT status, model, input_uncached + cache_read, output, workspace_id
                     FROM usage_events WHERE request_id = '${requestId}'`);
    if (row) return row.split('|');
    await new Promise((r) => setTimeout(r, 100));
  }
  return null;
}

test('openai chat, not streamed: answer, usage, operator key upstream, usage row', async () => {
  const { data, response } = await openai.chat.completions
    .create({ model: 'gpt-4o-mini', messages })
    .withResponse();
  assert.match(data.choices[0].message.content, /\S/);
  assert.ok(data.usage.prompt_tokens > 0 && data.usage.completion_tokens > 0);
  const up = await lastUpstreamRequest();
  assert.equal(header(up, 'authorization'), `Bearer ${process.env.OPERATOR_OPENAI_KEY}`);
  assert.ok(!JSON.stringify(up).includes(token), 'the workspace token went upstream');
  const rid = response.headers.get('x-rigbox-request-id');
  assert.ok(rid, 'X-Rigbox-Request-Id missing');
  const row = await usageRow(rid);
  assert.ok(row, 'no usage row');
  assert.equal(row[0], 'ok');
  assert.equal(Number(row[2]), data.usage.prompt_tokens);
  assert.equal(Number(row[3]), data.usage.completion_tokens);
  assert.equal(row[4], process.env.WORKSPACE_ID);
});

test('openai chat, streamed: deltas arrive; no usage chunk unless asked', async () => {
  let text = '';
  let usageChunks = 0;
  const stream = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages, stream: true });
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? '';
    if (chunk.usage) usageChunks++;
  }
  assert.match(text, /\S/);
  assert.equal(usageChunks, 0, 'the usage chunk the gateway injected reached a client that did not ask');

  let usage = null;
  const withUsage = await openai.chat.completions.create({
    model: 'gpt-4o-mini', messages, stream: true, stream_options: { include_usage: true },
  });
  for await (const chunk of withUsage) if (chunk.usage) usage = chunk.usage;
  assert.ok(usage && usage.prompt_tokens > 0 && usage.completion_tokens > 0);
});

test('openai responses, streamed and not', async () => {
  const r = await openai.responses.create({ model: 'gpt-4o-mini', input: 'Hello there' });
  assert.match(r.output_text, /\S/);
  assert.ok(r.usage.input_tokens > 0);
  const events = [];
  const stream = await openai.responses.create({ model: 'gpt-4o-mini', input: 'Hello', stream: true });
  for await (const e of stream) events.push(e.type);
  assert.equal(events[0], 'response.created');
  assert.equal(events[events.length - 1], 'response.completed');
  assert.ok(events.includes('response.output_text.delta'));
});

test('anthropic messages, not streamed: operator key and version upstream', async () => {
  // a version unlike the provider's default (config/models.yaml: 2023-06-01), which the gateway
  // sends when the client sends none: a dropped header shows (the mock refuses no header at all)
  const version = '2023-01-01';
  const m = await anthropic.messages.create(
    { model: 'claude-haiku-4-5', max_tokens: 64, messages },
    { headers: { 'anthropic-version': version } },
  );
  assert.equal(m.type, 'message');
  assert.match(m.content[0].text, /\S/);
  assert.ok(m.usage.input_tokens > 0 && m.usage.output_tokens > 0);
  const up = await lastUpstreamRequest();
  assert.equal(header(up, 'x-api-key'), process.env.OPERATOR_ANTHROPIC_KEY);
  assert.equal(header(up, 'anthropic-version'), version, 'the client\'s anthropic-version was not forwarded');
  assert.ok(!JSON.stringify(up).includes(token), 'the workspace token went upstream');
});

test('anthropic messages, streamed', async () => {
  const stream = anthropic.messages.stream({ model: 'claude-haiku-4-5', max_tokens: 64, messages });
  let text = '';
  stream.on('text', (t) => { text += t; });
  const final = await stream.finalMessage();
  assert.match(text, /\S/);
  assert.equal(final.stop_reason, 'end_turn');
  assert.ok(final.usage.output_tokens > 0);
});

test('tool calls, streamed: the SDKs assemble the arguments from their deltas', async () => {
  const tools = [{ type: 'function', function: { name: 'lookup', parameters: { type: 'object' } } }];
  const stream = openai.chat.completions.stream({ model: 'gpt-4o-mini', messages, tools });
  const done = await stream.finalChatCompletion();
  const call = done.choices[0].message.tool_calls[0];
  assert.equal(done.choices[0].finish_reason, 'tool_calls');
  assert.equal(call.function.name, 'lookup');
  assert.deepEqual(JSON.parse(call.function.arguments), { query: 'Say hello to the end-to-end test.' });
  const astream = anthropic.messages.stream({
    model: 'claude-haiku-4-5', max_tokens: 64, messages,
    tools: [{ name: 'lookup', input_schema: { type: 'object' } }],
  });
  const msg = await astream.finalMessage();
  assert.equal(msg.stop_reason, 'tool_use');
  assert.equal(msg.content[0].type, 'tool_use');
  assert.deepEqual(msg.content[0].input, { query: 'Say hello to the end-to-end test.' });
});

test('responses that reason and call a tool, streamed: the SDK assembles both items', async () => {
  const stream = openai.responses.stream({
    model: 'gpt-4o-mini', input: 'What is the weather in Paris?',
    reasoning: { effort: 'low', summary: 'auto' },
    tools: [{ type: 'function', name: 'lookup', parameters: { type: 'object' } }],
  });
  let summary = '';
  stream.on('response.reasoning_summary_text.delta', (e) => { summary += e.delta; });
  const r = await stream.finalResponse();
  assert.deepEqual(r.output.map((o) => o.type), ['reasoning', 'function_call']);
  assert.equal(r.output[0].summary[0].text, summary);
  assert.match(summary, /What is the weather in Paris/);
  const call = r.output[1];
  assert.equal(call.name, 'lookup');
  assert.deepEqual(JSON.parse(call.arguments), { query: 'What is the weather in Paris?' });
  assert.ok(r.usage.output_tokens_details.reasoning_tokens > 0);
});

test('models: list and retrieve with both SDKs', async () => {
  const ids = [];
  for await (const m of openai.models.list()) ids.push(m.id);
  assert.ok(ids.includes('gpt-4o-mini') && ids.includes('claude-haiku-4-5'));
  const one = await openai.models.retrieve('gpt-4o-mini');
  assert.equal(one.id, 'gpt-4o-mini');
  assert.equal(one.object, 'model');
  const aids = [];
  for await (const m of anthropic.models.list()) aids.push(m.id);
  assert.ok(aids.includes('claude-haiku-4-5') && !aids.includes('gpt-4o-mini'));
  const claude = await anthropic.models.retrieve('claude-haiku-4-5');
  assert.equal(claude.type, 'model');
  await assert.rejects(
    openai.models.retrieve('no-such-model'),
    (e) => e instanceof OpenAI.NotFoundError && e.status === 404,
  );
});

test('errors surface as the SDKs typed errors', async () => {
  await assert.rejects(
    openai.chat.completions.create({ model: 'no-such-model', messages }),
    (e) => e instanceof OpenAI.NotFoundError && e.status === 404,
  );
  const bad = new OpenAI({ baseURL: `${gw}/v1`, apiKey: 'rbw_not-a-real-token', maxRetries: 0 });
  await assert.rejects(
    bad.chat.completions.create({ model: 'gpt-4o-mini', messages }),
    (e) => e instanceof OpenAI.AuthenticationError && e.status === 401,
  );
  const badA = new Anthropic({ baseURL: gw, apiKey: 'rbw_not-a-real-token', maxRetries: 0 });
  await assert.rejects(
    badA.messages.create({ model: 'claude-haiku-4-5', max_tokens: 16, messages }),
    (e) => e instanceof Anthropic.AuthenticationError && e.status === 401,
  );
  await assert.rejects(
    anthropic.messages.create({ model: 'claude-haiku-4-5', messages }), // max_tokens missing
    (e) => e instanceof Anthropic.BadRequestError && e.status === 400,
  );
});
