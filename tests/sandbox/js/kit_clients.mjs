// @solana/kit, unmodified, against the sandbox: `sendAndConfirmTransactionFactory` (signature
// and slot notifications underneath), and `createSolanaRpcSubscriptions` for signature (with
// the "received" notification), account, logs and slot notifications, then their aborts.
//
// Argument (JSON): {rpcUrl, wsUrl, payerSecret: number[64], recipient, lamports, commitment}
// Prints (JSON): {signatures, confirmMs, signatureNotifications, accountNotifications,
//                 logNotifications, afterAbort, slotNotifications, errors}
import {
    AccountRole,
    address,
    appendTransactionMessageInstruction,
    createKeyPairSignerFromBytes,
    createSolanaRpc,
    createSolanaRpcSubscriptions,
    createTransactionMessage,
    getBase64EncodedWireTransaction,
    getSignatureFromTransaction,
    pipe,
    sendAndConfirmTransactionFactory,
    setTransactionMessageFeePayerSigner,
    setTransactionMessageLifetimeUsingBlockhash,
    signTransactionMessageWithSigners,
} from '@solana/kit';

import { args, fail, finish, now, waitFor } from './common.mjs';

const SYSTEM_PROGRAM = address('11111111111111111111111111111111');

/** System Program Transfer (instruction 2, lamports as u64 LE), built by hand so that no
 * program client beyond @solana/kit is needed. */
function transferInstruction(source, destination, lamports) {
    const data = new Uint8Array(12);
    const view = new DataView(data.buffer);
    view.setUint32(0, 2, true);
    view.setBigUint64(4, BigInt(lamports), true);
    return {
        programAddress: SYSTEM_PROGRAM,
        accounts: [
            { address: source.address, role: AccountRole.WRITABLE_SIGNER, signer: source },
            { address: destination, role: AccountRole.WRITABLE },
        ],
        data,
    };
}

const errors = [];

/** Read a subscription's notifications in the background until it is aborted. */
function consume(stream, signal, onNotification) {
    (async () => {
        try {
            for await (const notification of stream) onNotification(notification);
        } catch (error) {
            if (!signal.aborted) errors.push(String(error));
        }
    })();
}

async function main() {
    const { rpcUrl, wsUrl, payerSecret, recipient, lamports, commitment } = args;
    const rpc = createSolanaRpc(rpcUrl);
    const rpcSubscriptions = createSolanaRpcSubscriptions(wsUrl);
    const payer = await createKeyPairSignerFromBytes(Uint8Array.from(payerSecret));
    const to = address(recipient);

    const slots = [];
    const slotAbort = new AbortController();
    const slotStream = await rpcSubscriptions
        .slotNotifications()
        .subscribe({ abortSignal: slotAbort.signal });
    consume(slotStream, slotAbort.signal, info =>
        slots.push({ slot: Number(info.slot), parent: Number(info.parent), root: Number(info.root) }),
    );

    const watching = new AbortController();
    const accountNotifications = [];
    const logNotifications = [];
    const accountStream = await rpcSubscriptions
        .accountNotifications(to, { commitment, encoding: 'base64' })
        .subscribe({ abortSignal: watching.signal });
    consume(accountStream, watching.signal, ({ context, value }) =>
        accountNotifications.push({
            lamports: Number(value.lamports),
            slot: Number(context.slot),
            at: Date.now(),
        }),
    );
    const logsStream = await rpcSubscriptions
        .logsNotifications({ mentions: [to] }, { commitment })
        .subscribe({ abortSignal: watching.signal });
    consume(logsStream, watching.signal, ({ context, value }) =>
        logNotifications.push({
            signature: value.signature,
            err: value.err,
            logs: value.logs,
            slot: Number(context.slot),
            at: Date.now(),
        }),
    );

    const signedTransfer = async () => {
        const { value: blockhash } = await rpc.getLatestBlockhash({ commitment }).send();
        const message = pipe(
            createTransactionMessage({ version: 0 }),
            m => setTransactionMessageFeePayerSigner(payer, m),
            m => setTransactionMessageLifetimeUsingBlockhash(blockhash, m),
            m => appendTransactionMessageInstruction(transferInstruction(payer, to, lamports), m),
        );
        return signTransactionMessageWithSigners(message);
    };
    const sendAndConfirm = sendAndConfirmTransactionFactory({ rpc, rpcSubscriptions });

    // 1. The factory: signatureSubscribe (and slots, for the blockhash's expiry) underneath.
    const first = await signedTransfer();
    const sendStarted = now();
    await sendAndConfirm(first, { commitment });
    const confirmMs = now() - sendStarted;
    const firstSignature = getSignatureFromTransaction(first);
    await waitFor(
        () =>
            accountNotifications.length > 0 &&
            logNotifications.some(n => n.signature === firstSignature),
        'the account and logs notifications of the first transfer',
    );

    // 2. signatureNotifications directly, subscribed before sending: "received", then the result.
    const second = await signedTransfer();
    const secondSignature = getSignatureFromTransaction(second);
    const signatureAbort = new AbortController();
    const signatureNotifications = [];
    const signatureStream = await rpcSubscriptions
        .signatureNotifications(secondSignature, { commitment, enableReceivedNotification: true })
        .subscribe({ abortSignal: signatureAbort.signal });
    consume(signatureStream, signatureAbort.signal, ({ context, value }) =>
        signatureNotifications.push({ value, slot: Number(context.slot), at: Date.now() }),
    );
    await rpc
        .sendTransaction(getBase64EncodedWireTransaction(second), {
            encoding: 'base64',
            preflightCommitment: commitment,
        })
        .send();
    await waitFor(() => signatureNotifications.length >= 2, 'the two signature notifications');
    signatureAbort.abort();
    await waitFor(
        () =>
            accountNotifications.length > 1 &&
            logNotifications.some(n => n.signature === secondSignature),
        'the account and logs notifications of the second transfer',
    );

    // 3. Aborted subscriptions hear nothing more.
    watching.abort();
    const afterAbort = { account: accountNotifications.length, logs: logNotifications.length };
    const third = await signedTransfer();
    await sendAndConfirm(third, { commitment });
    const until = slots[slots.length - 1].slot + 3;
    await waitFor(() => slots[slots.length - 1].slot >= until, 'three more slots');
    slotAbort.abort();

    finish({
        signatures: [firstSignature, secondSignature, getSignatureFromTransaction(third)],
        confirmMs,
        signatureNotifications,
        accountNotifications,
        logNotifications,
        afterAbort,
        slotNotifications: slots.slice(0, 3),
        errors,
    });
}

main().catch(fail);
