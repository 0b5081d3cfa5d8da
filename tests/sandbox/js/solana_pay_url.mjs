// Read a Solana Pay URL with @solana/pay's own parseURL, as a wallet does: prints what kind
// of request it is and what it names (one JSON line). Used by tests/browser for the QR code.
import { parseURL } from '@solana/pay';
import { args, fail, finish } from './common.mjs';

try {
    const parsed = parseURL(args.url);
    if ('link' in parsed) {
        finish({
            kind: 'transaction_request',
            link: parsed.link.toString(),
            label: parsed.label ?? null,
            message: parsed.message ?? null,
        });
    } else {
        finish({
            kind: 'transfer',
            recipient: parsed.recipient.toBase58(),
            amount: parsed.amount ? parsed.amount.toString() : null,
            reference: (parsed.reference ?? []).map(key => key.toBase58()),
        });
    }
} catch (error) {
    fail(error);
}
