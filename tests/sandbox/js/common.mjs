// Shared by the client scripts: read the JSON argument, time things, wait with a deadline,
// print the one JSON result line pytest reads. Nothing here touches the clients themselves.

export const args = JSON.parse(process.argv[2] ?? '{}');

const started = performance.now();

/** Milliseconds since the script started. */
export const now = () => Math.round(performance.now() - started);

/** Resolve once `condition()` holds; reject after `timeoutMs` naming what was awaited. */
export async function waitFor(condition, what, timeoutMs = 15_000) {
    const deadline = performance.now() + timeoutMs;
    while (!condition()) {
        if (performance.now() > deadline) {
            throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
        }
        await new Promise(resolve => setTimeout(resolve, 10));
    }
}

/** Print the result and end the process (open sockets would keep it alive). */
export function finish(result) {
    process.stdout.write(JSON.stringify(result) + '\n');
    process.exit(0);
}

export function fail(error) {
    process.stdout.write(JSON.stringify({ error: String(error?.stack ?? error) }) + '\n');
    process.exit(1);
}
