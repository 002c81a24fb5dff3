from lit_pref.cli import main

if __name__ == "__main__":
    main()
