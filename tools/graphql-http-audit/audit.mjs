// Audits a running GraphQL endpoint against the GraphQL over HTTP spec with graphql-http's server audits.
//
//   node tools/graphql-http-audit/audit.mjs http://127.0.0.1:8000/graphql
//
// Prints every result that is not "ok" (MUST -> error, SHOULD -> warn, MAY -> notice), then one JSON line
// with the counts. Exits 1 when any MUST audit fails, 2 on a usage or connection problem, 0 otherwise.
import { auditServer } from 'graphql-http';

const url = process.argv[2];
if (!url) {
  console.error('usage: node audit.mjs <url of the /graphql endpoint>');
  process.exit(2);
}

let results;
try {
  results = await auditServer({ url });
} catch (error) {
  console.error(`the audit could not run against ${url}: ${error?.stack ?? error}`);
  process.exit(2);
}

const counts = { total: results.length, ok: 0, notice: 0, warn: 0, error: 0 };
for (const result of results) {
  counts[result.status] += 1;
  if (result.status === 'ok') continue;
  const status = result.response ? ` [HTTP ${result.response.status}]` : '';
  console.log(`${result.status.toUpperCase()} ${result.id} ${result.name}${status}: ${result.reason}`);
}
console.log(JSON.stringify({ counts }));
process.exit(counts.error > 0 ? 1 : 0);
