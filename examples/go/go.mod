module ghostcore.example/simple

go 1.19
