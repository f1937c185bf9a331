from worker_kit.cli import main

main()
