from rl2_lightning.metagenrl.train import main

main()
