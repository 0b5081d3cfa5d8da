// @solana/web3.js 1.x, unmodified, against the sandbox: `sendAndConfirmTransaction` (which
// confirms through signatureSubscribe on the WebSocket the Connection derives from the RPC
// URL: port + 1), `onAccountChange` and `onLogs`, then their removal.
//
// Argument (JSON): {rpcUrl, payerSecret: number[64], recipient, lamports, commitment}
// Prints (JSON): {signatures, confirmMs, accountNotifications, logNotifications,
//                 afterRemoval, slotNotifications}
import {
    Connection,
    Keypair,
    PublicKey,
    SystemProgram,
    Transaction,
    sendAndConfirmTransaction,
} from '@solana/web3.js';

import { args, fail, finish, now, waitFor } from './common.mjs';

async function main() {
    const { rpcUrl, payerSecret, recipient, lamports, commitment } = args;
    // No wsEndpoint: the client finds PubSub on RPC port + 1, as against a validator.
    const connection = new Connection(rpcUrl, { commitment });
    const payer = Keypair.fromSecretKey(Uint8Array.from(payerSecret));
    const to = new PublicKey(recipient);

    const accountNotifications = [];
    const logNotifications = [];
    const slots = [];
    const accountListener = connection.onAccountChange(
        to,
        (account, context) =>
            accountNotifications.push({ lamports: account.lamports, slot: context.slot, at: Date.now() }),
        { commitment, encoding: 'base64' },
    );
    const logsListener = connection.onLogs(
        to,
        (logs, context) =>
            logNotifications.push({
                signature: logs.signature,
                err: logs.err,
                logs: logs.logs,
                slot: context.slot,
                at: Date.now(),
            }),
        commitment,
    );
    // Subscriptions go out in order on one socket: once slots arrive, the server holds the
    // account and logs subscriptions made before.
    const slotListener = connection.onSlotChange(info => slots.push(info.slot));
    await waitFor(() => slots.length > 0, 'the first slot notification');

    const transfer = () =>
        new Transaction().add(
            SystemProgram.transfer({ fromPubkey: payer.publicKey, toPubkey: to, lamports }),
        );
    const sendStarted = now();
    const first = await sendAndConfirmTransaction(connection, transfer(), [payer], { commitment });
    const confirmMs = now() - sendStarted;
    await waitFor(
        () => accountNotifications.length > 0 && logNotifications.some(n => n.signature === first),
        'the account and logs notifications of the first transfer',
    );

    await connection.removeAccountChangeListener(accountListener);
    await connection.removeOnLogsListener(logsListener);
    const afterRemoval = { account: accountNotifications.length, logs: logNotifications.length };
    const second = await sendAndConfirmTransaction(connection, transfer(), [payer], { commitment });
    // A few more slots for any stray notification to show up.
    const until = slots[slots.length - 1] + 3;
    await waitFor(() => slots[slots.length - 1] >= until, 'three more slots');
    await connection.removeSlotChangeListener(slotListener);

    finish({
        signatures: [first, second],
        confirmMs,
        accountNotifications,
        logNotifications,
        afterRemoval,
        slotNotifications: slots.length,
    });
}

main().catch(fail);
