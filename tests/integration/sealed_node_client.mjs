// Run by tests/integration/test_sealed_processes.py: the bundled JS client (tp_gateway/static/sealed.bundle.js)
// in Node, trusting the network's own bootstrap file, sends one sealed chat and prints the answer as JSON.
//   node sealed_node_client.mjs BASE_URL BOOTSTRAP_FILE FIELDS_JSON
import { readFileSync } from "node:fs";

const { SealedClient } = await import(new URL("../../tp_gateway/static/sealed.bundle.js", import.meta.url));
const [baseURL, bootstrapFile, fieldsJson] = process.argv.slice(2);
const bootstrap = JSON.parse(readFileSync(bootstrapFile, "utf8"));
const trust = {
  network: bootstrap.network,
  threshold: bootstrap.threshold,
  authorities: bootstrap.authorities.map((a) => a.node_id),
};
const client = new SealedClient({ baseURL, trust });
const fields = JSON.parse(fieldsJson);
const answer = await client.chat.completions.create(fields);
let streamed = "";
for await (const chunk of await client.chat.completions.create({ ...fields, stream: true })) {
  streamed += chunk.choices[0].delta.content ?? "";
}
console.log(JSON.stringify({ content: answer.choices[0].message.content, streamed, node: client.lastNode }));
