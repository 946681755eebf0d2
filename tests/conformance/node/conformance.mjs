// The Vercel AI SDK's openai-compatible provider, with its default settings, against polyroute serve.
// Run by tests/conformance/test_ai_sdk.py: POLYROUTE_PROXY_URL (the OpenAI base URL, .../v1) and
// POLYROUTE_API_KEY come from the environment. Prints one JSON object: for each scenario, {ok, value} or
// {ok: false, error}, so the Python test asserts on each scenario separately.
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { embed, embedMany, generateText, Output, streamText, tool } from 'ai';
import { z } from 'zod';

const provider = createOpenAICompatible({
  name: 'polyroute',
  baseURL: process.env.POLYROUTE_PROXY_URL,
  apiKey: process.env.POLYROUTE_API_KEY,
});
// The setting for servers that take response_format json_schema (the proxy passes it through).
const strict = createOpenAICompatible({
  name: 'polyroute',
  baseURL: process.env.POLYROUTE_PROXY_URL,
  apiKey: process.env.POLYROUTE_API_KEY,
  supportsStructuredOutputs: true,
});
const prompt = 'hello conformance';
const lookup = tool({
  description: 'Look something up',
  inputSchema: z.object({ query: z.string() }),
});

const scenarios = {
  async generateText() {
    const r = await generateText({ model: provider('chat'), prompt });
    return { text: r.text, finishReason: r.finishReason, totalTokens: r.usage.totalTokens };
  },
  async streamText() {
    const r = streamText({ model: provider('chat'), prompt });
    const parts = [];
    for await (const part of r.textStream) parts.push(part);
    return { text: parts.join(''), parts: parts.length, finishReason: await r.finishReason };
  },
  async toolCall() {
    const r = await generateText({ model: provider('chat'), prompt, tools: { lookup } });
    return {
      finishReason: r.finishReason,
      toolCalls: r.toolCalls.map((c) => ({ toolName: c.toolName, input: c.input })),
    };
  },
  async toolCallStreamed() {
    const r = streamText({ model: provider('chat'), prompt, tools: { lookup } });
    const calls = [];
    for await (const part of r.fullStream) {
      if (part.type === 'tool-call') calls.push({ toolName: part.toolName, input: part.input });
      if (part.type === 'error') throw part.error;
    }
    return { toolCalls: calls };
  },
  async structuredOutput() {
    // default settings: response_format {type: "json_object"}, the schema checked client-side
    const schema = z.object({ echo: z.string() });
    const r = await generateText({ model: provider('chat'), prompt, output: Output.object({ schema }) });
    return { output: r.output };
  },
  async structuredOutputJsonSchema() {
    const schema = z.object({ text: z.string(), words: z.number().int() });
    const r = await generateText({ model: strict('chat'), prompt, output: Output.object({ schema }) });
    return { output: r.output };
  },
  async embed() {
    const r = await embed({ model: provider.embeddingModel('embed'), value: 'hello world' });
    return { embedding: r.embedding };
  },
  async embedMany() {
    const r = await embedMany({ model: provider.embeddingModel('embed'), values: ['hello world', 'second text'] });
    return { embeddings: r.embeddings };
  },
};

const results = {};
for (const [name, run] of Object.entries(scenarios)) {
  try {
    results[name] = { ok: true, value: await run() };
  } catch (error) {
    results[name] = { ok: false, error: `${error?.name}: ${error?.message}`.slice(0, 2000) };
  }
}
process.stdout.write(JSON.stringify(results));
