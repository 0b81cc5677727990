module github.com/avatar-forge/error-envelope

go 1.22
