module github.com/certfetch/certfetch/test/yaegi

go 1.26.0

replace github.com/certfetch/certfetch => ../..

require (
	github.com/certfetch/certfetch v0.0.0-00010101000000-000000000000
	github.com/mitchellh/mapstructure v1.5.1-0.20231216201459-8508981c8b6c
	github.com/stretchr/testify v1.12.1
	github.com/traefik/yaegi v0.16.1
	go.yaml.in/yaml/v3 v3.0.6
	golang.org/x/mod v0.43.0
)
