import VfioctlCommands
VfioctlCLI.main()
