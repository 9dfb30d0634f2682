module bazbii.local/engine

go 1.24
