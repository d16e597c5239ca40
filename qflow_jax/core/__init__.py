"""The core every engine shares: method objects (`methods`), the one translation to
diffrax with its failure rule (`integrate`), input checks with one tolerance policy
(`checks`), time-dependent operators as pytrees (`timeops`) and the result type
(`result`)."""
