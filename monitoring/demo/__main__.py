from monitoring.demo.cli import main

main()
