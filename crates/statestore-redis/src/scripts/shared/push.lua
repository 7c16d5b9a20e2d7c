
do
  local i, last = @first@, @last@
  while i <= last do
    local j = i + 999
    if j > last then j = last end
    pushed = pushed + rcall('@cmd@', @key@, unpack(@list@, i, j))
    i = j + 1
  end
end
