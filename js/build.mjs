// Bundles src/sealed.js and its pinned dependencies (package-lock.json) into one ES module the gateway serves,
// tp_gateway/static/sealed.bundle.js, with every bundled package's license beside it. `make js` runs this.
import { build } from "esbuild";
import { readFileSync, writeFileSync, existsSync } from "node:fs";

const OUT = "../tp_gateway/static/sealed.bundle.js";
const LICENSES = "../tp_gateway/static/sealed.bundle.LICENSES.txt";

const result = await build({
  entryPoints: ["src/sealed.js"],
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  outfile: OUT,
  legalComments: "eof",
  minify: true,
  metafile: true,
  banner: { js: "// token.place sealed client (js/src/sealed.js), bundled by esbuild from js/package-lock.json; licenses: sealed.bundle.LICENSES.txt" },
});

const packages = new Set();
for (const input of Object.keys(result.metafile.inputs)) {
  const match = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
  if (match) packages.add(match[1]);
}
const lock = JSON.parse(readFileSync("package-lock.json", "utf8")).packages;
let text = "Packages bundled into sealed.bundle.js, with their licenses.\n";
for (const name of [...packages].sort()) {
  const entry = lock[`node_modules/${name}`];
  const file = ["LICENSE", "LICENSE.md", "LICENSE.txt"].map((f) => `node_modules/${name}/${f}`).find(existsSync);
  text += `\n==== ${name} ${entry.version} (${entry.license ?? "see below"}) ====\n`;
  text += file ? readFileSync(file, "utf8") : `license: ${entry.license}\n`;
}
writeFileSync(LICENSES, text);
console.log(`wrote ${OUT} and ${LICENSES} (${packages.size} packages)`);
