module bootstrap.lab/images

go 1.26

require (
	github.com/lib/pq v1.12.3
	gopkg.in/yaml.v3 v3.0.1
)
