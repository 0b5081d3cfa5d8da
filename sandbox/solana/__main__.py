from sandbox.solana.server import main

main()
