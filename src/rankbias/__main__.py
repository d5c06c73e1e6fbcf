from rankbias.cli import main

main()
