// Drives the Vercel AI SDK (`ai` + `@ai-sdk/openai`, unmodified) against a Responses endpoint and prints one JSON
// line with what the SDK returned. Usage: node ai_sdk_check.mjs BASE_URL (generate|stream|tools) [MODEL]
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, streamText, tool, stepCountIs } from "ai";
import { z } from "zod";

const [baseURL, scenario, modelName = "fake-model"] = process.argv.slice(2);
const openai = createOpenAI({ baseURL, apiKey: "sk-client" });
const model = openai.responses(modelName);
const system = "You are terse.";

async function main() {
  if (scenario === "generate") {
    const result = await generateText({ model, system, prompt: "Hello from the AI SDK" });
    return { text: result.text, finishReason: result.finishReason, usage: result.usage,
             responseId: result.response?.id };
  }
  if (scenario === "stream") {
    const result = streamText({ model, system, prompt: "Stream me [chunks=5]" });
    const deltas = [];
    for await (const delta of result.textStream) deltas.push(delta);
    return { deltas, text: await result.text, finishReason: await result.finishReason,
             usage: await result.usage };
  }
  if (scenario === "tools") {
    const calls = [];
    const weather = tool({
      description: "The weather in a city",
      inputSchema: z.object({ city: z.string().describe("the city") }),
      execute: async ({ city }) => { calls.push(city); return { city, forecast: "sunny" }; },
    });
    const result = await generateText({ model, system, tools: { get_weather: weather },
                                        stopWhen: stepCountIs(3), prompt: "Please call get_weather Paris" });
    return { text: result.text, calls, steps: result.steps.length, finishReason: result.finishReason };
  }
  if (scenario === "stream-tools") {
    const calls = [];
    const weather = tool({
      description: "The weather in a city",
      inputSchema: z.object({ city: z.string() }),
      execute: async ({ city }) => { calls.push(city); return `sunny in ${city}`; },
    });
    const result = streamText({ model, system, tools: { get_weather: weather }, stopWhen: stepCountIs(3),
                                prompt: "Please call get_weather Rome" });
    const deltas = [];
    for await (const delta of result.textStream) deltas.push(delta);
    return { text: await result.text, calls, steps: (await result.steps).length };
  }
  if (scenario === "stream-failure") {
    const errors = [];
    const result = streamText({ model, system, prompt: "Fail please [cut=2]", maxRetries: 0,
                                onError: ({ error }) => { errors.push(String(error?.message ?? error)); } });
    const deltas = [];
    try {
      for await (const delta of result.textStream) deltas.push(delta);
    } catch (error) {
      // Through Envoy a broken upstream can reach the client as a cut body, which the SDK throws from the stream
      // itself instead of passing to onError: the failure still reached the caller, once.
      if (errors.length === 0) errors.push(String(error?.message ?? error));
    }
    return { deltas, errors, finishReason: await result.finishReason.catch((e) => `rejected: ${e}`) };
  }
  throw new Error(`unknown scenario ${scenario}`);
}

main().then(
  (out) => { process.stdout.write(JSON.stringify({ ok: true, ...out }) + "\n"); },
  (err) => { process.stdout.write(JSON.stringify({ ok: false, error: String(err?.stack || err),
                                                   data: err?.responseBody ?? null }) + "\n");
             process.exitCode = 1; },
);
