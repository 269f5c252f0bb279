from distillab.sft import main

if __name__ == "__main__":
    main()
