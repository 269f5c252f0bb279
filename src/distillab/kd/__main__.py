from distillab.kd import main

if __name__ == "__main__":
    main()
