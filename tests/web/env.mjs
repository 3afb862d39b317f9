// Where the tests find the server that run.sh started.
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export function serverFromEnv() {
  const url = process.env.BLIP2_URL;
  if (!url) {
    throw new Error('BLIP2_URL is not set: run these tests through tests/web/run.sh, which starts blip2 serve');
  }
  const here = dirname(fileURLToPath(import.meta.url));
  const sourceDir = process.env.BLIP2_SOURCE_DIR || resolve(here, '../..');
  return {
    url: url.replace(/\/$/, ''),
    apiKey: process.env.BLIP2_API_KEY || '',
    sourceDir,
    artifacts: process.env.BLIP2_ARTIFACTS || resolve(sourceDir, 'build/test-artifacts'),
  };
}
